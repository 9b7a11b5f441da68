// One step of LSTMStack (l2o_tf/rules/lstm.py) for every coordinate, fused on the CPU.
//
// The TF/XLA step writes each layer's [n, 4H] gate pre-activations to memory and reads them
// back for the activations: for a 20-unit LSTM that traffic, not the matmul, bounds a
// learned optimizer's step.  This kernel takes a few coordinates at a time through the whole
// stack with their gates in registers.  Its math is LSTMStack.step's, formula for formula:
// the caller passes the kernels and biases already multiplied by the gate scale, and
//   t = tanh([x, h] W + b);  c' = ((1 + f) c + (1 + i) g) / 2;  h' = (1 + o) tanh(c') / 2.
// tanh is Eigen's float rational approximation, the one TF's own CPU tanh uses, so the two
// steps agree to float rounding (the matmul's summation order differs).
// Forward only: it serves LearnedOptimizer's apply step, never a differentiated unroll.

#include <algorithm>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace l2o_tf {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::OpInputList;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
// A block is kLanes * kCols coordinates, stored transposed (feature-major) so that every
// vector holds one feature of kLanes coordinates and the cell update is plain vector math.
constexpr int kCols = 2;
constexpr int kBlock = kLanes * kCols;
constexpr int kGateChunk = 8;  // gate columns accumulated at once: kGateChunk * kCols registers

inline Vec Splat(float x) { return x - Vec{}; }  // x - (+0) == x exactly: a plain broadcast

// Eigen's ptanh_float (the CPU tanh of TensorFlow's own kernels): a [9/8] rational
// approximation on inputs clamped to where it reaches exactly +-1.
inline Vec Tanh(Vec x) {
#if defined(__FMA__)
  const Vec bound = Splat(8.01773357391357422f);
#else
  const Vec bound = Splat(7.90738964080810547f);
#endif
  x = x > bound ? bound : x;
  x = x < -bound ? -bound : x;
  const Vec x2 = x * x;
  Vec p = x2 * 1.394553628e-8f + 2.102733560e-5f;
  p = p * x2 + 3.520756727e-3f;
  p = p * x2 + 1.340216100e-1f;
  p = (x2 * x) * p + x;
  Vec q = x2 * 8.015776984e-7f + 3.326951409e-4f;
  q = q * x2 + 2.597254514e-2f;
  q = q * x2 + 4.673548340e-1f;
  q = q * x2 + 1.0f;
  return p / q;
}

#if defined(__AVX512F__)
// The block's rows and its feature-major buffers are converted 16 x 16 tiles at a time in
// registers; a scalar strided copy cost about a fifth of the step.
inline void Transpose16(__m512 r[16]) {  // r[i][j] <- r[j][i]
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0x88);
      t[8 * i + j + 4] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
  }
}

// 16 rows of `cols` floats (row stride `stride`) -> dst[j * kBlock + i] = src[i * stride + j].
inline void LoadTransposed(const float* src, int64_t stride, int cols, float* dst) {
  for (int k0 = 0; k0 < cols; k0 += 16) {
    const int m = std::min(16, cols - k0);
    const __mmask16 mask = static_cast<__mmask16>((1u << m) - 1);
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_maskz_loadu_ps(mask, src + i * stride + k0);
    Transpose16(r);
    for (int j = 0; j < m; ++j) _mm512_store_ps(dst + (k0 + j) * kBlock, r[j]);
  }
}

// The inverse: dst[i * stride + j] = src[j * kBlock + i] for 16 rows i and `cols` features j.
inline void StoreTransposed(const float* src, int cols, float* dst, int64_t stride) {
  for (int k0 = 0; k0 < cols; k0 += 16) {
    const int m = std::min(16, cols - k0);
    const __mmask16 mask = static_cast<__mmask16>((1u << m) - 1);
    __m512 r[16];
    for (int j = 0; j < 16; ++j) r[j] = j < m ? _mm512_load_ps(src + (k0 + j) * kBlock) : _mm512_setzero_ps();
    Transpose16(r);
    for (int i = 0; i < 16; ++i) _mm512_mask_storeu_ps(dst + i * stride + k0, mask, r[i]);
  }
}
#endif

// gates[j] = tanh(sum_k xh[k] w[k, j] + b[j]) for the block's coordinates; xh[k] and
// gates[j] are kCols vectors each.  w is [rows_in, gates_padded] with the gate columns padded
// to whole chunks (zero weights and bias), so the chunk loop has no tail.
void Gates(const Vec* xh, int rows_in, const float* w, const float* b, int gates_padded, Vec* gates) {
  for (int j0 = 0; j0 < gates_padded; j0 += kGateChunk) {
    Vec acc[kGateChunk][kCols];
    for (int j = 0; j < kGateChunk; ++j)
      for (int c = 0; c < kCols; ++c) acc[j][c] = Splat(b[j0 + j]);
    for (int k = 0; k < rows_in; ++k) {
      const float* wk = w + k * gates_padded + j0;
      Vec x[kCols];
      for (int c = 0; c < kCols; ++c) x[c] = xh[k * kCols + c];
      for (int j = 0; j < kGateChunk; ++j) {
        const Vec wj = Splat(wk[j]);
        for (int c = 0; c < kCols; ++c) acc[j][c] += x[c] * wj;
      }
    }
    for (int j = 0; j < kGateChunk; ++j)
      for (int c = 0; c < kCols; ++c) gates[(j0 + j) * kCols + c] = Tanh(acc[j][c]);
  }
}

class LstmStackStepOp : public OpKernel {
 public:
  explicit LstmStackStepOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& inputs = context->input(0);
    const Tensor& state = context->input(1);
    const Tensor& prefix = context->input(2);
    OpInputList kernels, biases;
    OP_REQUIRES_OK(context, context->input_list("kernels", &kernels));
    OP_REQUIRES_OK(context, context->input_list("biases", &biases));
    const int layers = kernels.size();
    OP_REQUIRES(context, inputs.dims() == 2 && state.dims() == 2 && prefix.dims() == 2,
                InvalidArgument("inputs, state and new_prefix must be matrices [n, ...]"));
    const int64_t n = inputs.dim_size(0);
    const int in_size = inputs.dim_size(1);
    const int hidden = biases[0].dim_size(0) / 4;
    const int k0 = prefix.dim_size(1);
    const int width = k0 + 2 * layers * hidden;
    OP_REQUIRES(context, state.dim_size(0) == n && prefix.dim_size(0) == n && state.dim_size(1) == width,
                InvalidArgument("state must be [n, new_prefix columns + 2 * layers * hidden] = [", n, ", ", width,
                                "], got ", state.shape().DebugString()));
    for (int l = 0; l < layers; ++l) {
      const int rows_in = (l == 0 ? in_size : hidden) + hidden;
      OP_REQUIRES(context,
                  kernels[l].dims() == 2 && kernels[l].dim_size(0) == rows_in &&
                      kernels[l].dim_size(1) == 4 * hidden && biases[l].dims() == 1 &&
                      biases[l].dim_size(0) == 4 * hidden,
                  InvalidArgument("layer ", l, " needs kernel [", rows_in, ", ", 4 * hidden, "] and bias [",
                                  4 * hidden, "], got ", kernels[l].shape().DebugString(), " and ",
                                  biases[l].shape().DebugString()));
    }
    const int padded = (4 * hidden + kGateChunk - 1) / kGateChunk * kGateChunk;
    std::vector<std::vector<float>> weights(layers), bias(layers);
    for (int l = 0; l < layers; ++l) {
      const int rows_in = kernels[l].dim_size(0);
      const float* w = kernels[l].flat<float>().data();
      weights[l].assign(rows_in * padded, 0.0f);
      bias[l].assign(padded, 0.0f);
      for (int k = 0; k < rows_in; ++k) std::copy(w + k * 4 * hidden, w + (k + 1) * 4 * hidden, &weights[l][k * padded]);
      std::copy(biases[l].flat<float>().data(), biases[l].flat<float>().data() + 4 * hidden, bias[l].data());
    }

    Tensor* output = nullptr;
    Tensor* new_state = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({n, hidden}), &output));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({n, width}), &new_state));
    const float* x_in = inputs.flat<float>().data();
    const float* s_in = state.flat<float>().data();
    const float* p_in = prefix.flat<float>().data();
    float* out = output->flat<float>().data();
    float* s_out = new_state->flat<float>().data();
    const int lstm_width = 2 * layers * hidden;

    auto work = [&](int64_t first_block, int64_t last_block) {
      // Feature-major buffers of one block: the input, the old and new LSTM state, the
      // [x, h] of the current layer and its gates.
      const int max_in = std::max(in_size, hidden) + hidden;
      std::vector<Vec> x_t(in_size * kCols), old_t(lstm_width * kCols), new_t(lstm_width * kCols);
      std::vector<Vec> xh(max_in * kCols), gates(padded * kCols);
      for (int64_t block = first_block; block < last_block; ++block) {
        const int64_t row0 = block * kBlock;
        const int rows = static_cast<int>(std::min<int64_t>(kBlock, n - row0));
        float* xf = reinterpret_cast<float*>(x_t.data());
        float* of = reinterpret_cast<float*>(old_t.data());
#if defined(__AVX512F__)
        if (rows == kBlock) {
          for (int c = 0; c < kCols; ++c) {
            LoadTransposed(x_in + (row0 + c * kLanes) * in_size, in_size, in_size, xf + c * kLanes);
            LoadTransposed(s_in + (row0 + c * kLanes) * width + k0, width, lstm_width, of + c * kLanes);
          }
        } else  // NOLINT: the last, partial block takes the scalar copy below
#endif
        {
          if (rows < kBlock) {
            std::fill(xf, xf + in_size * kBlock, 0.0f);
            std::fill(of, of + lstm_width * kBlock, 0.0f);
          }
          for (int r = 0; r < rows; ++r) {
            const float* x = x_in + (row0 + r) * in_size;
            for (int k = 0; k < in_size; ++k) xf[k * kBlock + r] = x[k];
            const float* s = s_in + (row0 + r) * width + k0;
            for (int k = 0; k < lstm_width; ++k) of[k * kBlock + r] = s[k];
          }
        }
        const Vec* layer_in = x_t.data();
        int size_in = in_size;
        for (int l = 0; l < layers; ++l) {
          const Vec* h_old = &old_t[2 * l * hidden * kCols];
          const Vec* c_old = h_old + hidden * kCols;
          Vec* h_new = &new_t[2 * l * hidden * kCols];
          Vec* c_new = h_new + hidden * kCols;
          std::copy(layer_in, layer_in + size_in * kCols, xh.data());
          std::copy(h_old, h_old + hidden * kCols, xh.data() + size_in * kCols);
          Gates(xh.data(), size_in + hidden, weights[l].data(), bias[l].data(), padded, gates.data());
          const Vec* i = gates.data();
          const Vec* f = i + hidden * kCols;
          const Vec* g = f + hidden * kCols;
          const Vec* o = g + hidden * kCols;
          for (int j = 0; j < hidden * kCols; ++j) {
            const Vec c = 0.5f * ((1.0f + f[j]) * c_old[j] + (1.0f + i[j]) * g[j]);
            c_new[j] = c;
            h_new[j] = 0.5f * (1.0f + o[j]) * Tanh(c);
          }
          layer_in = h_new;
          size_in = hidden;
        }
        const float* nf = reinterpret_cast<const float*>(new_t.data());
        const float* top = nf + 2 * (layers - 1) * hidden * kBlock;
        for (int r = 0; r < rows; ++r) {
          const int64_t row = row0 + r;
          std::copy(p_in + row * k0, p_in + (row + 1) * k0, s_out + row * width);
        }
#if defined(__AVX512F__)
        if (rows == kBlock) {
          for (int c = 0; c < kCols; ++c) {
            StoreTransposed(nf + c * kLanes, lstm_width, s_out + (row0 + c * kLanes) * width + k0, width);
            StoreTransposed(top + c * kLanes, hidden, out + (row0 + c * kLanes) * hidden, hidden);
          }
          continue;
        }
#endif
        for (int r = 0; r < rows; ++r) {
          const int64_t row = row0 + r;
          float* s = s_out + row * width + k0;
          for (int k = 0; k < lstm_width; ++k) s[k] = nf[k * kBlock + r];
          for (int k = 0; k < hidden; ++k) out[row * hidden + k] = top[k * kBlock + r];
        }
      }
    };
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    const int64_t cost = static_cast<int64_t>(kBlock) * 2 * layers * (2 * hidden) * 4 * hidden;
    auto* threads = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(threads->num_threads, threads->workers, blocks, cost, work);
  }
};

}  // namespace

REGISTER_OP("L2oLstmStackStep")
    .Input("inputs: float")
    .Input("state: float")
    .Input("new_prefix: float")
    .Input("kernels: num_layers * float")
    .Input("biases: num_layers * float")
    .Attr("num_layers: int >= 1")
    .Output("output: float")
    .Output("new_state: float")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      ::tensorflow::shape_inference::ShapeHandle inputs, state, bias;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &inputs));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &state));
      int num_layers;
      TF_RETURN_IF_ERROR(c->GetAttr("num_layers", &num_layers));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3 + num_layers), 1, &bias));
      ::tensorflow::shape_inference::DimensionHandle hidden;
      TF_RETURN_IF_ERROR(c->Divide(c->Dim(bias, 0), 4, true, &hidden));
      c->set_output(0, c->Matrix(c->Dim(inputs, 0), hidden));
      c->set_output(1, state);
      return ::tensorflow::OkStatus();
    })
    .Doc("One fused LSTMStack step per coordinate row (forward only); see lstm_stack_step.cc.");

REGISTER_KERNEL_BUILDER(Name("L2oLstmStackStep").Device(::tensorflow::DEVICE_CPU), LstmStackStepOp);

}  // namespace l2o_tf
