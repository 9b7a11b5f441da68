// Whole rule steps for every coordinate in one pass, forward only: what
// LearnedOptimizer(native_kernel=True) applies, where nothing differentiates the step.
//   L2oRnnpropStep: RNNprop.call (l2o_tf/rules/rnnprop.py): moments, normalised inputs, stack, head.
//   L2oDmlstmStep:  DMLSTM.call (l2o_tf/rules/dm_lstm.py): log-and-sign inputs, stack, head.
//
// Around the fused LSTM stack (lstm_core.h), a coordinate's preprocessing and output head stay
// in registers, so the step reads the gradient and the state once and writes the update and
// the new state once.  Run as TF ops around the stack kernel, they cost a fifth of RNNprop's
// native step at 1M coordinates: a dozen passes over [n] vectors, the stack's [n, H] output
// written and read back for the head, and the moments sliced out of and stacked into the state.
// Meta-training differentiates the step, so it runs the stack op (lstm_stack_step.cc), whose
// gradient is defined, with the rest in TF.

#include <string>

#include "lstm_core.h"
#include "vec_math.h"

namespace l2o_tf {
namespace {

// RNNprop: state [m, v (, u), stack]; inputs m_hat / sqrt(v_hat), g / sqrt(v_hat) (, m_hat /
// sqrt(u_hat)); coefficients [beta, 1 - beta, 1 - beta^t] per moment, then epsilon, output_scale.
class Rnnprop {
 public:
  explicit Rnnprop(OpKernelConstruction* context) {
    std::string form;
    OP_REQUIRES_OK(context, context->GetAttr("output_form", &form));
    OP_REQUIRES(context, form == "tanh" || form == "adam_scaled",
                InvalidArgument("output_form must be 'tanh' or 'adam_scaled', got '", form, "'"));
    adam_scaled_ = form == "adam_scaled";
  }

  // Reads the sizes the inputs imply: the moments (one input each) and the head's outputs.
  ::tensorflow::Status Configure(const WeightInputs& weights, const Tensor& coefficients) {
    const Tensor& input_kernel = weights.input_kernel[0];
    moments_ = input_kernel.dims() == 2 ? input_kernel.dim_size(0) : 0;
    if (moments_ != 2 && moments_ != 3)
      return InvalidArgument("the input layer's kernel must be [2 or 3 moments, E], got ",
                             input_kernel.shape().DebugString());
    if (coefficients.shape() != TensorShape({3 * moments_ + 2}))
      return InvalidArgument("coefficients must be [3 * moments + 2] = [", 3 * moments_ + 2, "], got ",
                             coefficients.shape().DebugString());
    coef_ = coefficients.flat<float>().data();
    return ::tensorflow::OkStatus();
  }
  int raw_inputs() const { return moments_; }
  int state_prefix() const { return moments_; }
  int outputs() const { return adam_scaled_ ? moments_ - 1 : 1; }

  // RNNprop.normalized_inputs for one vector of coordinates c: the new moments into new_state,
  // the inputs into x.
  void Inputs(Vec g, const Vec* old_state, Vec* new_state, Vec* x, int c) const {
    const float* coef = coef_;
    const Vec m = coef[0] * old_state[c] + coef[1] * g;
    const Vec m_hat = m / coef[2];
    new_state[c] = m;
    for (int i = 1; i < moments_; ++i) {
      const Vec second = coef[3 * i] * old_state[i * kCols + c] + coef[3 * i + 1] * (g * g);
      const Vec scale = Sqrt(second / coef[3 * i + 2]) + coef[3 * moments_];
      new_state[i * kCols + c] = second;
      x[(i == 1 ? 0 : 2) * kCols + c] = m_hat / scale;
      if (i == 1) x[kCols + c] = g / scale;
    }
  }

  // The update from the head's outputs: output_scale * tanh(z), or, adam_scaled, learned log
  // step sizes on the directions m_hat / sqrt(v_hat) (and m_hat / sqrt(u_hat)).
  Vec Update(const Vec* logits, const Vec* x, int c) const {
    const float output_scale = coef_[3 * moments_ + 1];
    if (!adam_scaled_) return output_scale * Tanh(logits[c]);
    Vec step = Exp(Clip(logits[c], -10.0f, 5.0f)) * x[c];
    if (outputs() == 2) step += Exp(Clip(logits[kCols + c], -10.0f, 5.0f)) * x[2 * kCols + c];
    return -output_scale * step;
  }

 private:
  bool adam_scaled_ = false;
  int moments_ = 0;
  const float* coef_ = nullptr;
};

// DM-LSTM: state [stack]; inputs log_and_sign(g) = (log|g| / k, sign g) where |g| >= e^-k, else
// (-1, e^k g), or g itself without preprocessing; coefficients [k, e^-k, e^k, output_scale].
class Dmlstm {
 public:
  explicit Dmlstm(OpKernelConstruction* context) { OP_REQUIRES_OK(context, context->GetAttr("preprocess", &preprocess_)); }

  ::tensorflow::Status Configure(const WeightInputs&, const Tensor& coefficients) {
    if (coefficients.shape() != TensorShape({4}))
      return InvalidArgument("coefficients must be [4] (k, e^-k, e^k, output_scale), got ",
                             coefficients.shape().DebugString());
    coef_ = coefficients.flat<float>().data();
    return ::tensorflow::OkStatus();
  }
  int raw_inputs() const { return preprocess_ ? 2 : 1; }
  int state_prefix() const { return 0; }
  int outputs() const { return 1; }

  void Inputs(Vec g, const Vec*, Vec*, Vec* x, int c) const {
    if (!preprocess_) {
      x[c] = g;
      return;
    }
    const Vec abs_g = g < 0.0f ? -g : g;
    const auto large = abs_g >= coef_[1];
    x[c] = large ? Log(large ? abs_g : Splat(1.0f)) / coef_[0] : Splat(-1.0f);
    x[kCols + c] = large ? Sign(g) : coef_[2] * g;
  }

  Vec Update(const Vec* logits, const Vec*, int c) const { return coef_[3] * logits[c]; }

 private:
  bool preprocess_ = true;
  const float* coef_ = nullptr;
};

// The op: per block of coordinates, the rule's inputs, the stack, the head and the update.
template <class Rule>
class RuleStepOp : public OpKernel {
 public:
  explicit RuleStepOp(OpKernelConstruction* context) : OpKernel(context), rule_(context) {}

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
    Rule rule = rule_;
    OP_REQUIRES_OK(context, rule.Configure(weights, coefficients));
    const int prefix = rule.state_prefix(), outputs = rule.outputs();
    Stack stack(0, 0, false, 0, 0);
    OP_REQUIRES_OK(context, CheckStack(n, rule.raw_inputs(), state, prefix, weights, &stack));
    const int hidden = stack.hidden;
    OP_REQUIRES(context, output_kernel->shape() == TensorShape({hidden, outputs}) &&
                             output_bias->shape() == TensorShape({outputs}),
                InvalidArgument("the output layer needs kernel [", hidden, ", ", outputs, "] and bias [", outputs,
                                "], got ", output_kernel->shape().DebugString(), " and ",
                                output_bias->shape().DebugString()));
    stack.SetWeights(weights, false);
    // The head's weights padded to whole chunks for Affine.
    const int head_padded = RoundUp(outputs);
    std::vector<float> head_w(hidden * head_padded, 0.0f), head_b(head_padded, 0.0f);
    for (int k = 0; k < hidden; ++k)
      for (int j = 0; j < outputs; ++j) head_w[k * head_padded + j] = output_kernel->matrix<float>()(k, j);
    for (int j = 0; j < outputs; ++j) head_b[j] = output_bias->vec<float>()(j);
    const int width = state.dim_size(1);

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
      // The block's old and new state feature-major (the rule's columns, then the stack's), the
      // new one row-major for StreamOut, its gradient (then its update), and the head's outputs.
      std::vector<Vec> old_full(width * kCols), new_full(width * kCols), rows_out(width * kCols);
      std::vector<Vec> g(kCols), logits(head_padded * kCols);
      for (int64_t block = first_block; block < last_block; ++block) {
        const auto [row0, rows, next] = BlockRows(block, n);
        PrefetchRange(g_in + row0 + kBlock, next);
        Prefetcher prefetch(s_in + (row0 + kBlock) * width, next * width);
        LoadBlock(s_in + row0 * width, width, width, rows, Floats(old_full));
        std::fill(Floats(g), Floats(g) + kBlock, 0.0f);
        std::copy(g_in + row0, g_in + row0 + rows, Floats(g));
        for (int c = 0; c < kCols; ++c) rule.Inputs(g[c], old_full.data(), new_full.data(), b.x.data(), c);
        stack.Forward(b.x.data(), old_full.data() + prefix * kCols, new_full.data() + prefix * kCols, b.emb.data(),
                      b.xh.data(), b.gates.data(), b.tanh_c.data(), &prefetch);
        prefetch.Finish();
        const Vec* top = new_full.data() + (prefix + 2 * (stack.layers - 1) * hidden) * kCols;
        Affine<false>(top, hidden, head_w.data(), head_b.data(), head_padded, logits.data());
        for (int c = 0; c < kCols; ++c) g[c] = rule.Update(logits.data(), b.x.data(), c);
        std::copy(Floats(g), Floats(g) + rows, u_out + row0);
        StoreBlock(Floats(new_full), width, rows, Floats(rows_out), width);
        StreamOut(Floats(rows_out), static_cast<int64_t>(rows) * width, s_out + row0 * width, stream);
      }
    };
    ShardBlocks(context, stack, n, work);
  }

 private:
  Rule rule_;
};

::tensorflow::Status RuleStepShape(::tensorflow::shape_inference::InferenceContext* c) {
  ::tensorflow::shape_inference::ShapeHandle grads, state;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &grads));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &state));
  c->set_output(0, grads);
  c->set_output(1, state);
  return ::tensorflow::OkStatus();
}

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
    .SetShapeFn(RuleStepShape)
    .Doc("The whole RNNprop step, forward only (no gradient); see rule_step.cc.");

REGISTER_KERNEL_BUILDER(Name("L2oRnnpropStep").Device(::tensorflow::DEVICE_CPU), RuleStepOp<Rnnprop>);

REGISTER_OP("L2oDmlstmStep")
    .Input("grads: float")
    .Input("state: float")
    .Input("coefficients: float")
    .Input("kernels: num_layers * float")
    .Input("biases: num_layers * float")
    .Input("output_kernel: float")
    .Input("output_bias: float")
    .Attr("num_layers: int >= 1")
    .Attr("preprocess: bool")
    .Output("updates: float")
    .Output("new_state: float")
    .SetShapeFn(RuleStepShape)
    .Doc("The whole DM-LSTM step, forward only (no gradient); see rule_step.cc.");

REGISTER_KERNEL_BUILDER(Name("L2oDmlstmStep").Device(::tensorflow::DEVICE_CPU), RuleStepOp<Dmlstm>);

}  // namespace l2o_tf
