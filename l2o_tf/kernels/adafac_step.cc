// L2oAdafacMlpStep: the whole AdafacMLP step (l2o_tf/rules/adafac_mlp.py) for the coordinates of
// one tensor, forward only: what LearnedOptimizer(native_kernel=True) applies to each variable.
//
// The rule normalises each feature by its root mean square over the tensor, and its Adafactor
// features need the tensor's row and column means of g^2 and the mean of the row accumulators,
// so the step cannot be one pass.  It is three, each reading only what it needs and recomputing
// the features rather than storing them (a [n, 28] feature array would be the whole cost):
//   R. row and column means of g^2 (factored tensors only; reads g), and the mean of the new row
//      accumulators (read once per row: see below);
//   1. every feature's sum of squares over the tensor;
//   2. all features, the MLP (with each feature's 1 / RMS folded into the first kernel), the
//      update and the new state.
// TF's step runs a dozen ops over [n, 28] arrays; this reads the state twice and writes it once.

#include <cmath>
#include <mutex>

#include "lstm_core.h"
#include "vec_math.h"

namespace l2o_tf {
namespace {

// Where each feature sits in the rule's feature vector, for M momenta (M Adafactor decays too).
struct FeatureIndex {
  explicit FeatureIndex(int moments) : M(moments) {}
  int M;
  int g() const { return 0; }
  int p() const { return 1; }
  int mom(int k) const { return 2 + k; }
  int rms() const { return 2 + M; }
  int mom_rms(int k) const { return 3 + M + k; }
  int rsqrt_rms() const { return 3 + 2 * M; }
  int fac_g(int k) const { return 4 + 2 * M + k; }
  int rows(int k) const { return 4 + 3 * M + k; }
  int cols(int k) const { return 4 + 4 * M + k; }
  int rsqrt_rows(int k) const { return 4 + 5 * M + k; }
  int rsqrt_cols(int k) const { return 4 + 6 * M + k; }
  int fac_mom(int k) const { return 4 + 7 * M + k; }
  int count() const { return 4 + 8 * M; }
};

// The coefficients input: per momentum its decay and 1 - decay, the RMS decay and 1 - decay, per
// Adafactor factor its decay and 1 - decay, then exp_mult, step_mult, the Adam prior's factor
// (adam_prior * sqrt(1 - b2^t) / (1 - b1^t), 0 without a prior) and Adam's epsilon: 4 M + 6.
struct Coefficients {
  Coefficients(const float* c, int moments) : M(moments), c(c) {}
  int M;
  const float* c;
  float m_decay(int k) const { return c[k]; }
  float m_rest(int k) const { return c[M + k]; }
  float rms_decay() const { return c[2 * M]; }
  float rms_rest() const { return c[2 * M + 1]; }
  float f_decay(int k) const { return c[2 * M + 2 + k]; }
  float f_rest(int k) const { return c[3 * M + 2 + k]; }
  float exp_mult() const { return c[4 * M + 2]; }
  float step_mult() const { return c[4 * M + 3]; }
  float adam() const { return c[4 * M + 4]; }
  float adam_epsilon() const { return c[4 * M + 5]; }
  static int size(int moments) { return 4 * moments + 6; }
};

// 1 / sqrt(x) for x > 0 to within a few float ulps: the hardware estimate and one Newton step,
// a fifth of the cost of a square root and a division (the step computes sixteen per coordinate
// per pass).  An infinite x gives 0, as 1 / sqrt(x) does.
inline Vec Rsqrt(Vec x) {
#if defined(__AVX512F__)
  const Vec y = (Vec)_mm512_rsqrt14_ps((__m512)x);
#elif defined(__AVX__)
  const Vec y = (Vec)_mm256_rsqrt_ps((__m256)x);
#else
  const Vec y = (Vec)_mm_rsqrt_ps((__m128)x);
#endif
  const Vec refined = y * (1.5f - (0.5f * x) * (y * y));
  return x < 3.0e38f ? refined : Splat(0.0f);
}

// The features of column c of a block (feature-major: feature j of the block is f[j * kCols ...]),
// computed as AdafacMLP.raw_features computes them, and the new state (if new_state is given).
// inverse_mean_rows: 1 / the tensor's mean of the new row accumulators, per factor (factored tensors).  rm, cm: the coordinates' row and
// column means of g^2 (factored tensors only).
inline void Features(const Coefficients& k, const FeatureIndex& at, bool factored, const Vec* state, Vec g, Vec p,
                     Vec rm, Vec cm, const float* inverse_mean_rows, Vec* f, Vec* new_state, int c) {
  const int M = k.M;
  const Vec g2 = g * g;
  const Vec g2e = g2 + 1e-30f;
  const Vec rms = k.rms_decay() * state[M * kCols + c] + k.rms_rest() * g2;
  const Vec rsqrt_rms = Rsqrt(rms + 1e-6f);
  f[at.g() * kCols + c] = g;
  f[at.p() * kCols + c] = p;
  f[at.rms() * kCols + c] = rms;
  f[at.rsqrt_rms() * kCols + c] = rsqrt_rms;
  if (new_state != nullptr) new_state[M * kCols + c] = rms;
  for (int i = 0; i < M; ++i) {
    const Vec m = k.m_decay(i) * state[i * kCols + c] + k.m_rest(i) * g;
    const Vec rows = k.f_decay(i) * state[(M + 1 + i) * kCols + c] + k.f_rest(i) * (factored ? rm : g2e);
    const Vec cols = k.f_decay(i) * state[(2 * M + 1 + i) * kCols + c] + k.f_rest(i) * (factored ? cm : g2e);
    f[at.mom(i) * kCols + c] = m;
    f[at.mom_rms(i) * kCols + c] = m * rsqrt_rms;
    f[at.rows(i) * kCols + c] = rows;
    f[at.cols(i) * kCols + c] = cols;
    f[at.rsqrt_rows(i) * kCols + c] = Rsqrt(rows + 1e-8f);
    f[at.rsqrt_cols(i) * kCols + c] = Rsqrt(cols + 1e-8f);
    if (!factored) {
      f[at.fac_g(i) * kCols + c] = g * Rsqrt(rows + 1e-30f);
      f[at.fac_mom(i) * kCols + c] = m * Rsqrt(rows + 1e-6f);
    } else {
      const Vec row_scale = rows * inverse_mean_rows[i];
      f[at.fac_g(i) * kCols + c] = g * Rsqrt(row_scale * cols + 1e-30f);
      f[at.fac_mom(i) * kCols + c] = m * (Rsqrt(row_scale + 1e-9f) * Rsqrt(cols + 1e-9f));
    }
    if (new_state != nullptr) {
      new_state[i * kCols + c] = m;
      new_state[(M + 1 + i) * kCols + c] = rows;
      new_state[(2 * M + 1 + i) * kCols + c] = cols;
    }
  }
}

inline float Sum(Vec v) {
  float total = 0.0f;
  for (int i = 0; i < kLanes; ++i) total += v[i];
  return total;
}

class AdafacMlpStepOp : public OpKernel {
 public:
  explicit AdafacMlpStepOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("moments", &moments_));
    OP_REQUIRES_OK(context, context->GetAttr("num_rows", &num_rows_));
    OP_REQUIRES_OK(context, context->GetAttr("num_cols", &num_cols_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& grads = context->input(0);
    const Tensor& params = context->input(1);
    const Tensor& state = context->input(2);
    const Tensor& coefficients = context->input(3);
    OpInputList kernels, biases;
    OP_REQUIRES_OK(context, context->input_list("kernels", &kernels));
    OP_REQUIRES_OK(context, context->input_list("biases", &biases));
    const int M = moments_, width = 3 * M + 1;
    const FeatureIndex at(M);
    const int features = at.count();
    OP_REQUIRES(context, grads.dims() == 1 && params.shape() == grads.shape(),
                InvalidArgument("grads and params must be vectors [n] of one size, got ", grads.shape().DebugString(),
                                " and ", params.shape().DebugString()));
    const int64_t n = grads.dim_size(0);
    OP_REQUIRES(context, state.dims() == 2 && state.dim_size(0) == n && state.dim_size(1) == width,
                InvalidArgument("state must be [n, 3 * moments + 1] = [", n, ", ", width, "], got ",
                                state.shape().DebugString()));
    OP_REQUIRES(context, coefficients.shape() == TensorShape({Coefficients::size(M)}),
                InvalidArgument("coefficients must be [4 * moments + 6] = [", Coefficients::size(M), "], got ",
                                coefficients.shape().DebugString()));
    const bool factored = num_rows_ > 0;
    const int64_t grid = static_cast<int64_t>(num_rows_) * num_cols_;
    OP_REQUIRES(context, !factored || (num_cols_ > 0 && n % grid == 0),
                InvalidArgument("a factored tensor's ", n, " coordinates must be whole [", num_rows_, ", ", num_cols_,
                                "] grids"));
    // The MLP: kernels[0] maps the features, the others are [in, out]; the last gives 2 outputs.
    const int layers = kernels.size();
    for (int l = 0; l < layers; ++l) {
      const int in = l == 0 ? features : kernels[l - 1].dim_size(1);
      const int out = l == layers - 1 ? 2 : (kernels[l].dims() == 2 ? kernels[l].dim_size(1) : -1);
      OP_REQUIRES(context, kernels[l].dims() == 2 && kernels[l].dim_size(0) == in && kernels[l].dim_size(1) == out &&
                               biases[l].shape() == TensorShape({out}),
                  InvalidArgument("layer ", l, " needs kernel [", in, ", ", out, "] and bias [", out, "], got ",
                                  kernels[l].shape().DebugString(), " and ", biases[l].shape().DebugString()));
    }
    const Coefficients k(coefficients.flat<float>().data(), M);
    const float* g_in = grads.flat<float>().data();
    const float* p_in = params.flat<float>().data();
    const float* s_in = state.flat<float>().data();
    auto* threads = context->device()->tensorflow_cpu_worker_threads();
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    std::mutex merge;

    // Pass R: row means of g^2 over the last dimension, column means over the second-to-last.
    const int64_t num_grid_rows = factored ? n / num_cols_ : 0;
    std::vector<float> row_mean(num_grid_rows), col_mean(factored ? (n / grid) * num_cols_ : 0, 0.0f);
    if (factored) {
      const int C = num_cols_, R = num_rows_;
      ::tensorflow::Shard(threads->num_threads, threads->workers, num_grid_rows, 4 * C, [&](int64_t j0, int64_t j1) {
        std::vector<float> cols(col_mean.size(), 0.0f);
        for (int64_t j = j0; j < j1; ++j) {
          const float* g = g_in + j * C;
          float* col = cols.data() + (j / R) * C;
          float total = 0.0f;
          for (int c = 0; c < C; ++c) {
            const float v = g[c] * g[c] + 1e-30f;
            total += v;
            col[c] += v;
          }
          row_mean[j] = total / C;
        }
        std::lock_guard<std::mutex> lock(merge);
        for (size_t i = 0; i < cols.size(); ++i) col_mean[i] += cols[i];
      });
      for (float& v : col_mean) v /= R;
    }

    // A block's inputs, feature-major: its state, g, p and (factored) its row and column means.
    struct Block {
      Block(int width, int features)
          : state(width * kCols), new_state(width * kCols), rows_out(width * kCols), f(features * kCols), g(kCols),
            p(kCols), rm(kCols), cm(kCols), valid(kCols) {}
      std::vector<Vec> state, new_state, rows_out, f, g, p, rm, cm, valid;
    };
    auto load = [&](int64_t block, Block* b, bool with_state) {
      const BlockRows at_rows(block, n);
      if (with_state) LoadBlock(s_in + at_rows.row0 * width, width, width, at_rows.rows, Floats(b->state));
      float* g = Floats(b->g);
      float* p = Floats(b->p);
      float* valid = Floats(b->valid);
      std::fill(g, g + kBlock, 0.0f);
      std::fill(p, p + kBlock, 0.0f);
      std::copy(g_in + at_rows.row0, g_in + at_rows.row0 + at_rows.rows, g);
      std::copy(p_in + at_rows.row0, p_in + at_rows.row0 + at_rows.rows, p);
      for (int r = 0; r < kBlock; ++r) valid[r] = r < at_rows.rows ? 1.0f : 0.0f;
      if (!factored) return at_rows;
      float* rm = Floats(b->rm);
      float* cm = Floats(b->cm);
      const int C = num_cols_;
      int64_t j = at_rows.row0 / C;  // grid row, and where in it
      int c = static_cast<int>(at_rows.row0 - j * C);
      int64_t col_base = (j / num_rows_) * C;
      for (int r = 0; r < kBlock; ++r) {
        if (r < at_rows.rows) {
          rm[r] = row_mean[j];
          cm[r] = col_mean[col_base + c];
        } else {
          rm[r] = cm[r] = 0.0f;
        }
        if (++c == C) {
          c = 0;
          ++j;
          if (j % num_rows_ == 0) col_base += C;
        }
      }
      return at_rows;
    };
    const int64_t cost = kBlock * (width + features) * 8;

    // The tensor's mean of the new row accumulators (Adafactor's row scale divides by it).  In every
    // state the rule produces (zeros, then updates by row means) a row's accumulator is the same at
    // each of its coordinates, so each grid row's first coordinate gives it: a read per row, not a
    // pass over the state.
    std::vector<float> inverse_mean_rows(M, 0.0f);
    if (factored) {
      std::vector<double> total(M, 0.0);
      for (int64_t j = 0; j < num_grid_rows; ++j) {
        const float* rows_prev = s_in + j * num_cols_ * width + M + 1;
        for (int i = 0; i < M; ++i) total[i] += k.f_decay(i) * rows_prev[i] + k.f_rest(i) * row_mean[j];
      }
      for (int i = 0; i < M; ++i) inverse_mean_rows[i] = 1.0f / (static_cast<float>(total[i] / num_grid_rows) + 1e-30f);
    }

    // Pass 1: each feature's sum of squares over the tensor.
    std::vector<double> sum_sq(features, 0.0);
    ::tensorflow::Shard(threads->num_threads, threads->workers, blocks, cost, [&](int64_t first, int64_t last) {
      Block b(width, features);
      std::vector<Vec> sq(features * kCols, Splat(0.0f));
      for (int64_t block = first; block < last; ++block) {
        const BlockRows at_rows = load(block, &b, true);
        for (int c = 0; c < kCols; ++c) {
          Features(k, at, factored, b.state.data(), b.g[c], b.p[c], b.rm[c], b.cm[c], inverse_mean_rows.data(),
                   b.f.data(), nullptr, c);
          if (at_rows.rows < kBlock)
            for (int j = 0; j < features; ++j) b.f[j * kCols + c] *= b.valid[c];
          for (int j = 0; j < features; ++j) sq[j * kCols + c] += b.f[j * kCols + c] * b.f[j * kCols + c];
        }
      }
      std::lock_guard<std::mutex> lock(merge);
      for (int j = 0; j < features; ++j)
        for (int c = 0; c < kCols; ++c) sum_sq[j] += Sum(sq[j * kCols + c]);
    });

    // The MLP's weights, padded to whole chunks for Affine, each feature's 1 / RMS folded into the
    // first kernel's rows.
    std::vector<std::vector<float>> w(layers), bias(layers);
    std::vector<int> padded(layers);
    for (int l = 0; l < layers; ++l) {
      const auto kernel = kernels[l].matrix<float>();
      const int in = kernel.dimension(0), out = kernel.dimension(1);
      padded[l] = RoundUp(out);
      w[l].assign(static_cast<size_t>(in) * padded[l], 0.0f);
      bias[l].assign(padded[l], 0.0f);
      for (int i = 0; i < in; ++i) {
        const float scale = l == 0 ? 1.0f / std::sqrt(static_cast<float>(sum_sq[i] / n) + 1e-5f) : 1.0f;
        for (int j = 0; j < out; ++j) w[l][i * padded[l] + j] = scale * kernel(i, j);
      }
      for (int j = 0; j < out; ++j) bias[l][j] = biases[l].vec<float>()(j);
    }
    int widest = features;
    for (int l = 0; l < layers; ++l) widest = std::max(widest, padded[l]);

    // Pass 2: features, MLP, update, new state.
    Tensor* updates = nullptr;
    Tensor* new_state = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({n}), &updates));
    OP_REQUIRES_OK(context, context->allocate_output(1, state.shape(), &new_state));
    float* u_out = updates->flat<float>().data();
    float* s_out = new_state->flat<float>().data();
    const bool stream = n * width * static_cast<int64_t>(sizeof(float)) >= kStreamBytes;
    ::tensorflow::Shard(threads->num_threads, threads->workers, blocks, cost * 4, [&](int64_t first, int64_t last) {
      Block b(width, features);
      std::vector<Vec> in(widest * kCols), out(widest * kCols), u(kCols);
      for (int64_t block = first; block < last; ++block) {
        const BlockRows at_rows = load(block, &b, true);
        for (int c = 0; c < kCols; ++c)
          Features(k, at, factored, b.state.data(), b.g[c], b.p[c], b.rm[c], b.cm[c], inverse_mean_rows.data(), b.f.data(),
                   b.new_state.data(), c);
        const Vec* x = b.f.data();
        int rows_in = features;
        for (int l = 0; l < layers; ++l) {
          Affine<false>(x, rows_in, w[l].data(), bias[l].data(), padded[l], out.data());
          if (l < layers - 1) {
            const int hidden = kernels[l].dim_size(1);
            for (int j = 0; j < hidden * kCols; ++j) in[j] = out[j] > 0.0f ? out[j] : Splat(0.0f);
            x = in.data();
            rows_in = hidden;
          }
        }
        for (int c = 0; c < kCols; ++c) {
          const Vec z = Clip(k.exp_mult() * out[kCols + c], -87.0f, 88.0f);
          const Vec scale = Exp(z) * k.step_mult();
          Vec step = -out[c] * scale;
          if (k.adam() != 0.0f) {
            const Vec m1 = b.new_state[c], v = b.new_state[M * kCols + c];
            step -= (m1 * (scale * k.adam())) / (Sqrt(v) + k.adam_epsilon());
          }
          u[c] = step;
        }
        std::copy(Floats(u), Floats(u) + at_rows.rows, u_out + at_rows.row0);
        StoreBlock(Floats(b.new_state), width, at_rows.rows, Floats(b.rows_out), width);
        StreamOut(Floats(b.rows_out), static_cast<int64_t>(at_rows.rows) * width, s_out + at_rows.row0 * width, stream);
      }
#if defined(__AVX512F__)
      _mm_sfence();
#endif
    });
  }

 private:
  int moments_ = 0;
  int num_rows_ = 0;
  int num_cols_ = 0;
};

}  // namespace

REGISTER_OP("L2oAdafacMlpStep")
    .Input("grads: float")
    .Input("params: float")
    .Input("state: float")
    .Input("coefficients: float")
    .Input("kernels: num_layers * float")
    .Input("biases: num_layers * float")
    .Attr("num_layers: int >= 1")
    .Attr("moments: int >= 1")
    .Attr("num_rows: int >= 0")
    .Attr("num_cols: int >= 0")
    .Output("updates: float")
    .Output("new_state: float")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(2));
      return ::tensorflow::OkStatus();
    })
    .Doc("The whole AdafacMLP step for one tensor's coordinates, forward only (no gradient); see adafac_step.cc.");

REGISTER_KERNEL_BUILDER(Name("L2oAdafacMlpStep").Device(::tensorflow::DEVICE_CPU), AdafacMlpStepOp);

}  // namespace l2o_tf
