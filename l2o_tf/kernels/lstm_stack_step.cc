// L2oLstmStackStep: one step of LSTMStack (l2o_tf/rules/lstm.py) for every coordinate, fused
// on the CPU (lstm_core.h), and L2oLstmStackStepGrad, its gradient, so that meta-training
// unrolls can run it too.

#include "lstm_core.h"

namespace l2o_tf {
namespace {

// acc[k, j] += sum_v x[k, v] * d[j, v] over `count` vectors v (lanes stay apart until the
// partition's end): the weight gradient's outer products, over a super-block of blocks at a
// time so that each accumulator tile stays in registers for 2 * count multiply-adds.
// x is [rows (a multiple of 4), stride] vectors, d [cols (a multiple of 4), stride], acc [rows, cols].
void AccumulateOuter(const Vec* x, int rows, const Vec* d, int cols, int stride, int count, Vec* acc) {
  for (int k0 = 0; k0 < rows; k0 += 4)
    for (int j0 = 0; j0 < cols; j0 += 4) {
      const Vec* __restrict x0 = x + k0 * stride;
      const Vec* __restrict x1 = x0 + stride;
      const Vec* __restrict x2 = x1 + stride;
      const Vec* __restrict x3 = x2 + stride;
      const Vec* __restrict d0 = d + j0 * stride;
      const Vec* __restrict d1 = d0 + stride;
      const Vec* __restrict d2 = d1 + stride;
      const Vec* __restrict d3 = d2 + stride;
      Vec* a0 = acc + k0 * cols + j0;
      Vec* a1 = a0 + cols;
      Vec* a2 = a1 + cols;
      Vec* a3 = a2 + cols;
      Vec t00 = a0[0], t01 = a0[1], t02 = a0[2], t03 = a0[3], t10 = a1[0], t11 = a1[1], t12 = a1[2], t13 = a1[3];
      Vec t20 = a2[0], t21 = a2[1], t22 = a2[2], t23 = a2[3], t30 = a3[0], t31 = a3[1], t32 = a3[2], t33 = a3[3];
      for (int v = 0; v < count; ++v) {
        const Vec u0 = x0[v], u1 = x1[v], u2 = x2[v], u3 = x3[v];
        const Vec e0 = d0[v], e1 = d1[v], e2 = d2[v], e3 = d3[v];
        t00 += u0 * e0; t01 += u0 * e1; t02 += u0 * e2; t03 += u0 * e3;
        t10 += u1 * e0; t11 += u1 * e1; t12 += u1 * e2; t13 += u1 * e3;
        t20 += u2 * e0; t21 += u2 * e1; t22 += u2 * e2; t23 += u2 * e3;
        t30 += u3 * e0; t31 += u3 * e1; t32 += u3 * e2; t33 += u3 * e3;
      }
      a0[0] = t00; a0[1] = t01; a0[2] = t02; a0[3] = t03; a1[0] = t10; a1[1] = t11; a1[2] = t12; a1[3] = t13;
      a2[0] = t20; a2[1] = t21; a2[2] = t22; a2[3] = t23; a3[0] = t30; a3[1] = t31; a3[2] = t32; a3[3] = t33;
    }
}

// Copies a block's `rows` features (kCols vectors each) into slot `slot` of a super-block
// buffer laid out [rows, kStride] vectors: what AccumulateOuter sums over.
template <int kStride>
inline void CopyToSlot(const Vec* src, int rows, int slot, Vec* super) {
  for (int k = 0; k < rows; ++k) std::copy(src + k * kCols, src + (k + 1) * kCols, super + k * kStride + slot * kCols);
}

class LstmStackStepOp : public OpKernel {
 public:
  explicit LstmStackStepOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& inputs = context->input(0);
    const Tensor& state = context->input(1);
    const Tensor& prefix = context->input(2);
    WeightInputs weights;
    OP_REQUIRES_OK(context, weights.Read(context));
    OP_REQUIRES(context, inputs.dims() == 2, InvalidArgument("inputs must be a matrix [n, features], got ", inputs.shape().DebugString()));
    OP_REQUIRES(context, prefix.dims() == 2 && prefix.dim_size(0) == inputs.dim_size(0),
                InvalidArgument("new_prefix must be a matrix [n, k], got ", prefix.shape().DebugString()));
    Stack stack(0, 0, false, 0, 0);
    OP_REQUIRES_OK(context, CheckStack(inputs.dim_size(0), inputs.dim_size(1), state, prefix.dim_size(1), weights, &stack));
    stack.SetWeights(weights, false);
    const int64_t n = inputs.dim_size(0);
    const int in_size = stack.raw_size, hidden = stack.hidden, k0 = prefix.dim_size(1);
    const int lstm_width = stack.lstm_width, width = k0 + lstm_width;

    Tensor* output = nullptr;
    Tensor* new_state = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({n, hidden}), &output));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({n, width}), &new_state));
    const float* x_in = inputs.flat<float>().data();
    const float* s_in = state.flat<float>().data();
    const float* p_in = prefix.flat<float>().data();
    float* out = output->flat<float>().data();
    float* s_out = new_state->flat<float>().data();

    const bool stream = n * width * static_cast<int64_t>(sizeof(float)) >= kStreamBytes;
    auto work = [&](int64_t first_block, int64_t last_block) {
      Scratch b(stack);
      // The new state's block feature-major (prefix, then the stack's), and row-major for StreamOut.
      std::vector<Vec> full(width * kCols), rows_out(width * kCols), out_rows(hidden * kCols);
      for (int64_t block = first_block; block < last_block; ++block) {
        const auto [row0, rows, next] = BlockRows(block, n);
        PrefetchRange(x_in + (row0 + kBlock) * in_size, next * in_size);
        PrefetchRange(p_in + (row0 + kBlock) * k0, next * k0);
        Prefetcher prefetch(s_in + (row0 + kBlock) * width, next * width);
        LoadBlock(x_in + row0 * in_size, in_size, in_size, rows, Floats(b.x));
        LoadBlock(s_in + row0 * width + k0, width, lstm_width, rows, Floats(b.old_state));
        if (k0 > 0) LoadBlock(p_in + row0 * k0, k0, k0, rows, Floats(full));
        stack.Forward(b.x.data(), b.old_state.data(), full.data() + k0 * kCols, b.emb.data(), b.xh.data(),
                      b.gates.data(), b.tanh_c.data(), &prefetch);
        prefetch.Finish();
        StoreBlock(Floats(full), width, rows, Floats(rows_out), width);
        StreamOut(Floats(rows_out), static_cast<int64_t>(rows) * width, s_out + row0 * width, stream);
        StoreBlock(Floats(full) + (k0 + 2 * (stack.layers - 1) * hidden) * kBlock, hidden, rows, Floats(out_rows), hidden);
        StreamOut(Floats(out_rows), static_cast<int64_t>(rows) * hidden, out + row0 * hidden, stream);
      }
    };
    ShardBlocks(context, stack, n, work);
  }
};

// The gradient of L2oLstmStackStep with respect to its inputs, state, kernels and biases
// (new_prefix's is d_new_state's first columns, taken in Python).  It recomputes the forward
// step block by block instead of storing the gates.  The weight gradients are summed per
// partition of the blocks, a fixed split for a given n, and the partitions in order, so the
// result does not depend on the thread count or scheduling: meta-training stays reproducible.
class LstmStackStepGradOp : public OpKernel {
 public:
  explicit LstmStackStepGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& inputs = context->input(0);
    const Tensor& state = context->input(1);
    const Tensor& d_output = context->input(2);
    const Tensor& d_new_state = context->input(3);
    WeightInputs weights;
    OP_REQUIRES_OK(context, weights.Read(context));
    const OpInputList &kernels = weights.kernels, &biases = weights.biases;
    OP_REQUIRES(context, inputs.dims() == 2, InvalidArgument("inputs must be a matrix [n, features], got ", inputs.shape().DebugString()));
    OP_REQUIRES(context, state.dims() == 2 && biases[0].dims() == 1,
                InvalidArgument("state must be a matrix [n, width] and biases vectors"));
    Stack stack(0, 0, false, 0, 0);
    const int lstm_width_guess = 2 * kernels.size() * (biases[0].dim_size(0) / 4);
    const int k0 = state.dim_size(1) - lstm_width_guess;
    OP_REQUIRES(context, k0 >= 0, InvalidArgument("state is narrower than the LSTM state"));
    OP_REQUIRES_OK(context, CheckStack(inputs.dim_size(0), inputs.dim_size(1), state, k0, weights, &stack));
    stack.SetWeights(weights, true);
    const int64_t n = inputs.dim_size(0);
    const int raw_size = stack.raw_size, in_size = stack.in_size, hidden = stack.hidden, layers = stack.layers;
    const int lstm_width = stack.lstm_width, width = state.dim_size(1);
    OP_REQUIRES(context, d_output.shape() == TensorShape({n, hidden}) && d_new_state.shape() == state.shape(),
                InvalidArgument("d_output must be [n, hidden] and d_new_state shaped like state"));

    Tensor* d_inputs = nullptr;
    Tensor* d_state = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, inputs.shape(), &d_inputs));
    OP_REQUIRES_OK(context, context->allocate_output(1, state.shape(), &d_state));
    OpOutputList d_kernels, d_biases, d_input_kernel, d_input_bias;
    OP_REQUIRES_OK(context, context->output_list("d_kernels", &d_kernels));
    OP_REQUIRES_OK(context, context->output_list("d_biases", &d_biases));
    OP_REQUIRES_OK(context, context->output_list("d_input_kernel", &d_input_kernel));
    OP_REQUIRES_OK(context, context->output_list("d_input_bias", &d_input_bias));

    const int64_t blocks = (n + kBlock - 1) / kBlock;
    // At least kMinPartitionBlocks blocks per partition (its lane sums cost about one block's
    // work), at most kPartitions partitions.
    const int64_t partitions = std::min<int64_t>(kPartitions, (blocks + kMinPartitionBlocks - 1) / kMinPartitionBlocks);
    // One partition's weight and bias gradients, lane-wise: per layer [RoundUp4(rows_in), padded]
    // then [padded] (the bias is the product with a row of ones).
    int64_t acc_size = 0;
    std::vector<int64_t> w_offset(layers);
    for (int l = 0; l < layers; ++l) {
      w_offset[l] = acc_size;
      acc_size += static_cast<int64_t>(RoundUp4(stack.rows_in(l) + 1)) * stack.padded;
    }
    const int64_t embed_offset = acc_size;  // the input layer's [RoundUp4(raw_size + 1), embed_padded]
    if (stack.embed) acc_size += static_cast<int64_t>(RoundUp4(raw_size + 1)) * stack.embed_padded;
    std::vector<float> partial(partitions * acc_size, 0.0f);

    const float* x_in = inputs.flat<float>().data();
    const float* s_in = state.flat<float>().data();
    const float* do_in = d_output.flat<float>().data();
    const float* ds_in = d_new_state.flat<float>().data();
    float* dx_out = d_inputs->flat<float>().data();
    float* ds_out = d_state->flat<float>().data();
    constexpr int kStride = kSuper * kCols;  // vectors per feature of a super-block

    auto work = [&](int64_t first_partition, int64_t last_partition) {
      Scratch b(stack);
      std::vector<Vec> d_out(hidden * kCols), d_new(lstm_width * kCols), d_x(in_size * kCols),
          d_old(lstm_width * kCols), dz(layers * stack.padded * kCols), d_above(hidden * kCols),
          dz_emb(stack.embed_padded * kCols), d_raw(RoundUp(raw_size) * kCols);
      std::vector<Vec> x_super, dz_emb_super;  // the input layer's super-block buffers
      if (stack.embed) {
        x_super.assign(RoundUp4(raw_size + 1) * kStride, Vec{});
        for (int v = 0; v < kStride; ++v) x_super[raw_size * kStride + v] = Splat(1.0f);
        dz_emb_super.assign(stack.embed_padded * kStride, Vec{});
      }
      int max_rows = 0;
      for (int l = 0; l < layers; ++l) max_rows = std::max(max_rows, RoundUp(stack.rows_in(l)));
      std::vector<Vec> d_xh(max_rows * kCols), acc(acc_size);
      // A super-block's [x, h, 1] and dz per layer, feature-major over its kSuper blocks.
      std::vector<std::vector<Vec>> xh_super(layers), dz_super(layers);
      for (int l = 0; l < layers; ++l) {
        const int rows = stack.rows_in(l);
        xh_super[l].assign(RoundUp4(rows + 1) * kStride, Vec{});
        for (int v = 0; v < kStride; ++v) xh_super[l][rows * kStride + v] = Splat(1.0f);
        dz_super[l].assign(stack.padded * kStride, Vec{});
      }
      auto flush = [&](int count) {
        for (int l = 0; l < layers; ++l)
          AccumulateOuter(xh_super[l].data(), RoundUp4(stack.rows_in(l) + 1), dz_super[l].data(), stack.padded,
                          kStride, count * kCols, acc.data() + w_offset[l]);
        if (stack.embed)
          AccumulateOuter(x_super.data(), RoundUp4(raw_size + 1), dz_emb_super.data(), stack.embed_padded, kStride,
                          count * kCols, acc.data() + embed_offset);
      };
      for (int64_t p = first_partition; p < last_partition; ++p) {
        std::fill(acc.begin(), acc.end(), Vec{});
        int slot = 0;
        for (int64_t block = blocks * p / partitions; block < blocks * (p + 1) / partitions; ++block) {
          const auto [row0, rows, next] = BlockRows(block, n);
          PrefetchRange(x_in + (row0 + kBlock) * raw_size, next * raw_size);
          PrefetchRange(do_in + (row0 + kBlock) * hidden, next * hidden);
          Prefetcher prefetch_state(s_in + (row0 + kBlock) * width, next * width);
          Prefetcher prefetch_d_state(ds_in + (row0 + kBlock) * width, next * width);
          LoadBlock(x_in + row0 * raw_size, raw_size, raw_size, rows, Floats(b.x));
          LoadBlock(s_in + row0 * width + k0, width, lstm_width, rows, Floats(b.old_state));
          LoadBlock(do_in + row0 * hidden, hidden, hidden, rows, Floats(d_out));
          LoadBlock(ds_in + row0 * width + k0, width, lstm_width, rows, Floats(d_new));
          stack.Forward(b.x.data(), b.old_state.data(), b.new_state.data(), b.emb.data(), b.xh.data(),
                        b.gates.data(), b.tanh_c.data(), &prefetch_state);
          prefetch_state.Finish();
          stack.Backward(b.old_state.data(), b.gates.data(), b.tanh_c.data(), d_out.data(), d_new.data(),
                         d_x.data(), d_old.data(), dz.data(), d_xh.data(), d_above.data(), &prefetch_d_state);
          prefetch_d_state.Finish();
          if (stack.embed) {
            stack.EmbedBackward(b.emb.data(), d_x.data(), dz_emb.data(), d_raw.data());
            CopyToSlot<kStride>(b.x.data(), raw_size, slot, x_super.data());
            CopyToSlot<kStride>(dz_emb.data(), stack.embed_padded, slot, dz_emb_super.data());
          }
          StoreBlock(Floats(stack.embed ? d_raw : d_x), raw_size, rows, dx_out + row0 * raw_size, raw_size);
          for (int64_t row = row0; row < row0 + rows; ++row) std::fill(ds_out + row * width, ds_out + row * width + k0, 0.0f);
          StoreBlock(Floats(d_old), lstm_width, rows, ds_out + row0 * width + k0, width);
          for (int l = 0; l < layers; ++l) {
            CopyToSlot<kStride>(b.xh.data() + stack.xh_offset(l), stack.rows_in(l), slot, xh_super[l].data());
            CopyToSlot<kStride>(dz.data() + l * stack.padded * kCols, stack.padded, slot, dz_super[l].data());
          }
          if (++slot == kSuper) {
            flush(slot);
            slot = 0;
          }
        }
        if (slot > 0) flush(slot);
        float* out = &partial[p * acc_size];
        for (int64_t a = 0; a < acc_size; ++a)
          for (int lane = 0; lane < kLanes; ++lane) out[a] += acc[a][lane];
      }
    };
    auto* threads = context->device()->tensorflow_cpu_worker_threads();
    const int64_t cost = 3 * (blocks / partitions + 1) * kBlock * 2 * layers * (2 * hidden) * 4 * hidden;
    ::tensorflow::Shard(threads->num_threads, threads->workers, partitions, cost, work);

    // A weight's gradient [rows, cols] and its bias's [cols]: the partitions' sums in order, read
    // from their accumulators at `offset` ([rows + 1, stride]: the bias is the row of ones).
    auto sum_partitions = [&](int64_t offset, int rows, int cols, int stride, Tensor* dk, Tensor* db) {
      float* dkf = dk->flat<float>().data();
      float* dbf = db->flat<float>().data();
      std::fill(dkf, dkf + rows * cols, 0.0f);
      std::fill(dbf, dbf + cols, 0.0f);
      for (int64_t p = 0; p < partitions; ++p) {
        const float* part = &partial[p * acc_size + offset];
        for (int k = 0; k < rows; ++k)
          for (int j = 0; j < cols; ++j) dkf[k * cols + j] += part[k * stride + j];
        for (int j = 0; j < cols; ++j) dbf[j] += part[rows * stride + j];
      }
    };
    for (int l = 0; l < layers; ++l) {
      const int rows = stack.rows_in(l);
      Tensor* dk = nullptr;
      Tensor* db = nullptr;
      OP_REQUIRES_OK(context, d_kernels.allocate(l, TensorShape({rows, 4 * hidden}), &dk));
      OP_REQUIRES_OK(context, d_biases.allocate(l, TensorShape({4 * hidden}), &db));
      sum_partitions(w_offset[l], rows, 4 * hidden, stack.padded, dk, db);
    }
    if (stack.embed) {
      Tensor* dk = nullptr;
      Tensor* db = nullptr;
      OP_REQUIRES_OK(context, d_input_kernel.allocate(0, TensorShape({raw_size, in_size}), &dk));
      OP_REQUIRES_OK(context, d_input_bias.allocate(0, TensorShape({in_size}), &db));
      sum_partitions(embed_offset, raw_size, in_size, stack.embed_padded, dk, db);
    }
  }

 private:
  static constexpr int64_t kPartitions = 64;
  static constexpr int64_t kMinPartitionBlocks = 32;
  static constexpr int kSuper = 8;  // blocks per weight-gradient pass
};

}  // namespace

REGISTER_OP("L2oLstmStackStep")
    .Input("inputs: float")
    .Input("state: float")
    .Input("new_prefix: float")
    .Input("kernels: num_layers * float")
    .Input("biases: num_layers * float")
    .Input("input_kernel: num_embed * float")
    .Input("input_bias: num_embed * float")
    .Attr("num_layers: int >= 1")
    .Attr("num_embed: int >= 0 = 0")
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
    .Doc("One fused LSTMStack step per coordinate row (its gradient: L2oLstmStackStepGrad); see lstm_stack_step.cc.");

REGISTER_KERNEL_BUILDER(Name("L2oLstmStackStep").Device(::tensorflow::DEVICE_CPU), LstmStackStepOp);

REGISTER_OP("L2oLstmStackStepGrad")
    .Input("inputs: float")
    .Input("state: float")
    .Input("d_output: float")
    .Input("d_new_state: float")
    .Input("kernels: num_layers * float")
    .Input("biases: num_layers * float")
    .Input("input_kernel: num_embed * float")
    .Input("input_bias: num_embed * float")
    .Attr("num_layers: int >= 1")
    .Attr("num_embed: int >= 0 = 0")
    .Output("d_inputs: float")
    .Output("d_state: float")
    .Output("d_kernels: num_layers * float")
    .Output("d_biases: num_layers * float")
    .Output("d_input_kernel: num_embed * float")
    .Output("d_input_bias: num_embed * float")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      int num_layers;
      TF_RETURN_IF_ERROR(c->GetAttr("num_layers", &num_layers));
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      int num_embed;
      TF_RETURN_IF_ERROR(c->GetAttr("num_embed", &num_embed));
      for (int l = 0; l < 2 * num_layers + 2 * num_embed; ++l) c->set_output(2 + l, c->input(4 + l));
      return ::tensorflow::OkStatus();
    })
    .Doc("The gradient of L2oLstmStackStep (new_prefix's excepted); see lstm_stack_step.cc.");

REGISTER_KERNEL_BUILDER(Name("L2oLstmStackStepGrad").Device(::tensorflow::DEVICE_CPU), LstmStackStepGradOp);

}  // namespace l2o_tf
