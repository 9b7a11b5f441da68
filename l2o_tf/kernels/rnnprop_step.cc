// L2oRnnpropStep: the whole RNNprop step (RNNprop.call, l2o_tf/rules/rnnprop.py) for every
// coordinate in one pass, forward only: what LearnedOptimizer(native_kernel=True) applies.
//
// Around the fused LSTM stack (lstm_core.h), a coordinate's moments, normalised inputs and
// output head stay in registers, so the step reads the gradient and the state once and writes
// the update and the new state once.  Run as TF ops, they cost a sixth of the native step at
// 1M coordinates: a dozen passes over [n] vectors, the stack's [n, H] output written and read
// back for the head, and the moments sliced out of and stacked into the state.
// Meta-training differentiates the step, so it runs the stack op (lstm_stack_step.cc), whose
// gradient is defined, with the rest in TF.

#include <string>

#include "lstm_core.h"

namespace l2o_tf {
namespace {

inline Vec Sqrt(Vec x) {
#if defined(__AVX512F__)
  return (Vec)_mm512_sqrt_ps((__m512)x);
#elif defined(__AVX__)
  return (Vec)_mm256_sqrt_ps((__m256)x);
#else
  return (Vec)_mm_sqrt_ps((__m128)x);
#endif
}

// exp(x) for x in [-10, 5] (RNNprop clips its log step sizes there): Cephes' expf, as in
// Eigen's pexp, on x = n ln 2 + r with |r| <= ln(2) / 2 and the exponent n put in by hand.
inline Vec Exp(Vec x) {
  typedef int IVec __attribute__((vector_size(kLanes * sizeof(int))));
  const Vec magic = Splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const Vec n = (x * 1.44269504088896341f + magic) - magic;
  const Vec r = x - n * 0.693359375f + n * 2.12194440e-4f;
  const Vec r2 = r * r;
  Vec y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r2 + r + 1.0f;
  const IVec bits = (__builtin_convertvector(n, IVec) + 127) << 23;
  return y * (Vec)bits;
}

inline Vec Clip(Vec x, float low, float high) {
  x = x < low ? Splat(low) : x;
  return x > high ? Splat(high) : x;
}

class RnnpropStepOp : public OpKernel {
 public:
  explicit RnnpropStepOp(OpKernelConstruction* context) : OpKernel(context) {
    std::string form;
    OP_REQUIRES_OK(context, context->GetAttr("output_form", &form));
    OP_REQUIRES(context, form == "tanh" || form == "adam_scaled",
                InvalidArgument("output_form must be 'tanh' or 'adam_scaled', got '", form, "'"));
    adam_scaled_ = form == "adam_scaled";
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& grads = context->input(0);
    const Tensor& state = context->input(1);
    const Tensor& coefficients = context->input(2);
    WeightInputs weights;
    OP_REQUIRES_OK(context, weights.Read(context));
    const Tensor* output_kernel = nullptr;
    const Tensor* output_bias = nullptr;
    OP_REQUIRES_OK(context, context->input("output_kernel", &output_kernel));
    OP_REQUIRES_OK(context, context->input("output_bias", &output_bias));
    OP_REQUIRES(context, grads.dims() == 1, InvalidArgument("grads must be a vector [n], got ", grads.shape().DebugString()));
    const int64_t n = grads.dim_size(0);
    // One input per moment: the input layer's kernel is [moments, E].
    const int moments = weights.input_kernel[0].dims() == 2 ? weights.input_kernel[0].dim_size(0) : 0;
    OP_REQUIRES(context, moments == 2 || moments == 3,
                InvalidArgument("the input layer's kernel must be [2 or 3 moments, E], got ",
                                weights.input_kernel[0].shape().DebugString()));
    Stack stack(0, 0, false, 0, 0);
    OP_REQUIRES_OK(context, CheckStack(n, moments, state, moments, weights, &stack));
    const int hidden = stack.hidden, outputs = adam_scaled_ ? moments - 1 : 1;
    OP_REQUIRES(context, output_kernel->shape() == TensorShape({hidden, outputs}) &&
                             output_bias->shape() == TensorShape({outputs}),
                InvalidArgument("the output layer needs kernel [", hidden, ", ", outputs, "] and bias [", outputs,
                                "], got ", output_kernel->shape().DebugString(), " and ",
                                output_bias->shape().DebugString()));
    OP_REQUIRES(context, coefficients.shape() == TensorShape({3 * moments + 2}),
                InvalidArgument("coefficients must be [3 * moments + 2] = [", 3 * moments + 2, "], got ",
                                coefficients.shape().DebugString()));
    stack.SetWeights(weights, false);
    // The head's weights padded to whole chunks for Affine.
    const int head_padded = RoundUp(outputs);
    std::vector<float> head_w(hidden * head_padded, 0.0f), head_b(head_padded, 0.0f);
    for (int k = 0; k < hidden; ++k)
      for (int j = 0; j < outputs; ++j) head_w[k * head_padded + j] = output_kernel->matrix<float>()(k, j);
    for (int j = 0; j < outputs; ++j) head_b[j] = output_bias->vec<float>()(j);
    // Per moment: beta, 1 - beta, and the bias correction 1 - beta^t; then epsilon, output_scale.
    const float* coef = coefficients.flat<float>().data();
    const float epsilon = coef[3 * moments], output_scale = coef[3 * moments + 1];
    const int width = state.dim_size(1), lstm_width = stack.lstm_width;

    Tensor* updates = nullptr;
    Tensor* new_state = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({n}), &updates));
    OP_REQUIRES_OK(context, context->allocate_output(1, state.shape(), &new_state));
    const float* g_in = grads.flat<float>().data();
    const float* s_in = state.flat<float>().data();
    float* u_out = updates->flat<float>().data();
    float* s_out = new_state->flat<float>().data();
    const bool stream = n * width * static_cast<int64_t>(sizeof(float)) >= kStreamBytes;

    auto work = [&](int64_t first_block, int64_t last_block) {
      Scratch b(stack);
      // The block's old and new state feature-major (moments, then the stack's), the new one
      // row-major for StreamOut, its gradient, and its head's outputs.
      std::vector<Vec> old_full(width * kCols), new_full(width * kCols), rows_out(width * kCols);
      std::vector<Vec> g(kCols), logits(head_padded * kCols);
      for (int64_t block = first_block; block < last_block; ++block) {
        const int64_t row0 = block * kBlock;
        const int rows = static_cast<int>(std::min<int64_t>(kBlock, n - row0));
        const int64_t next = std::max<int64_t>(0, std::min<int64_t>(kBlock, n - row0 - kBlock));
        Prefetcher prefetch(s_in + (row0 + kBlock) * width, next * width);
        LoadBlock(s_in + row0 * width, width, width, rows, Floats(old_full));
        std::fill(Floats(g), Floats(g) + kBlock, 0.0f);
        std::copy(g_in + row0, g_in + row0 + rows, Floats(g));
        for (int c = 0; c < kCols; ++c) {
          // RNNprop.normalized_inputs: m, v (and u) updated; the inputs m_hat / sqrt(v_hat),
          // g / sqrt(v_hat) (and m_hat / sqrt(u_hat)).
          const Vec gc = g[c];
          const Vec m = coef[0] * old_full[c] + coef[1] * gc;
          const Vec m_hat = m / coef[2];
          new_full[c] = m;
          for (int i = 1; i < moments; ++i) {
            const Vec second = coef[3 * i] * old_full[i * kCols + c] + coef[3 * i + 1] * (gc * gc);
            const Vec scale = Sqrt(second / coef[3 * i + 2]) + epsilon;
            new_full[i * kCols + c] = second;
            b.x[(i == 1 ? 0 : 2) * kCols + c] = m_hat / scale;
            if (i == 1) b.x[kCols + c] = gc / scale;
          }
        }
        stack.Forward(b.x.data(), old_full.data() + moments * kCols, new_full.data() + moments * kCols, b.emb.data(),
                      b.xh.data(), b.gates.data(), b.tanh_c.data(), &prefetch);
        prefetch.Finish();
        const Vec* top = new_full.data() + (moments + 2 * (stack.layers - 1) * hidden) * kCols;
        Affine<false>(top, hidden, head_w.data(), head_b.data(), head_padded, logits.data());
        for (int c = 0; c < kCols; ++c) {
          if (adam_scaled_) {
            // Learned log step sizes on the directions m_hat / sqrt(v_hat) (and m_hat / sqrt(u_hat)).
            Vec step = Exp(Clip(logits[c], -10.0f, 5.0f)) * b.x[c];
            if (outputs == 2) step += Exp(Clip(logits[kCols + c], -10.0f, 5.0f)) * b.x[2 * kCols + c];
            g[c] = -output_scale * step;
          } else {
            g[c] = output_scale * Tanh(logits[c]);
          }
        }
        std::copy(Floats(g), Floats(g) + rows, u_out + row0);
        StoreBlock(Floats(new_full), width, rows, Floats(rows_out), width);
        StreamOut(Floats(rows_out), static_cast<int64_t>(rows) * width, s_out + row0 * width, stream);
      }
#if defined(__AVX512F__)
      _mm_sfence();
#endif
    };
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    const int64_t cost = static_cast<int64_t>(kBlock) * 2 * stack.layers * (2 * hidden) * 4 * hidden;
    auto* threads = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(threads->num_threads, threads->workers, blocks, cost, work);
  }

 private:
  bool adam_scaled_ = false;
};

}  // namespace

REGISTER_OP("L2oRnnpropStep")
    .Input("grads: float")
    .Input("state: float")
    .Input("coefficients: float")
    .Input("kernels: num_layers * float")
    .Input("biases: num_layers * float")
    .Input("input_kernel: float")
    .Input("input_bias: float")
    .Input("output_kernel: float")
    .Input("output_bias: float")
    .Attr("num_layers: int >= 1")
    .Attr("output_form: string")
    .Output("updates: float")
    .Output("new_state: float")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      ::tensorflow::shape_inference::ShapeHandle grads, state;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &grads));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &state));
      c->set_output(0, grads);
      c->set_output(1, state);
      return ::tensorflow::OkStatus();
    })
    .Doc("The whole RNNprop step, forward only (no gradient); see rnnprop_step.cc.");

REGISTER_KERNEL_BUILDER(Name("L2oRnnpropStep").Device(::tensorflow::DEVICE_CPU), RnnpropStepOp);

}  // namespace l2o_tf
