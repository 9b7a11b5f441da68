// The fused LSTM-stack step shared by l2o_tf's native ops (lstm_stack_step.cc, rule_step.cc).
//
// The TF/XLA step writes each layer's [n, 4H] gate pre-activations to memory and reads them
// back for the activations: for a 20-unit LSTM that traffic, not the matmul, bounds a
// learned optimizer's step.  These kernels take a few coordinates at a time through the whole
// stack with their gates in registers.  The math is LSTMStack.step's, formula for formula:
// the caller passes the kernels and biases already multiplied by the gate scale, and
//   t = tanh([x, h] W + b);  c' = ((1 + f) c + (1 + i) g) / 2;  h' = (1 + o) tanh(c') / 2.
// tanh is Eigen's float rational approximation, the one TF's own CPU tanh uses, so the
// steps agree to float rounding (the matmul's summation order differs).  An optional ELU input
// layer (RNNprop's embedding), tf.nn.elu(inputs W + b), runs first in the same pass.

#ifndef L2O_TF_KERNELS_LSTM_CORE_H_
#define L2O_TF_KERNELS_LSTM_CORE_H_

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
using ::tensorflow::OpOutputList;
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
#if defined(__AVX512F__)
  x = (Vec)_mm512_max_ps((__m512)(-bound), _mm512_min_ps((__m512)bound, (__m512)x));  // a NaN x stays NaN
#else
  x = x > bound ? bound : x;
  x = x < -bound ? -bound : x;
#endif
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

// ELU, z > 0 ? z : exp(z) - 1, with exp(z) - 1 = 2 tanh(z/2) / (1 - tanh(z/2)): no cancellation
// for z <= 0, and exactly -1 where tanh saturates.
inline Vec Elu(Vec z) {
  const Vec t = Tanh(0.5f * z);
  const Vec negative = 2.0f * t / (1.0f - t);
  return z > 0.0f ? z : negative;
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

// Prefetches a range (the next block's state rows) a few cache lines at a time, spread over the
// current block's products: issued at once, a block's ~160 lines overflow the core's miss
// buffers and the prefetch instructions themselves stall (7% of the step in perf; spreading
// them took RNNprop's whole step from 123 to 106 ms per 1M coordinates).
class Prefetcher {
 public:
  Prefetcher(const float* begin, int64_t floats)
      : next_(reinterpret_cast<const char*>(begin)), end_(next_ + floats * sizeof(float)) {}
  void Issue(int64_t lines) {
    for (; lines > 0 && next_ < end_; --lines, next_ += 64) __builtin_prefetch(next_);
  }
  void Finish() { Issue((end_ - next_ + 63) / 64); }

 private:
  const char* next_;
  const char* end_;
};

// Prefetches a small range (a few lines of the next block's inputs) at once.
inline void PrefetchRange(const float* begin, int64_t floats) { Prefetcher(begin, floats).Finish(); }

constexpr int kPrefetchLines = 8;  // per chunk of gate columns: ~23 chunks per block, 164 lines

// out[j] = sum_k in[k] w[k, j] (+ b[j]) (then tanh) for the block's coordinates; in[k] and
// out[j] are kCols vectors each.  w is [rows_in, cols_padded] with the columns padded to
// whole chunks (zero weights and bias), so the chunk loop has no tail.  The forward step's
// gates and the backward step's input gradients (with w transposed) are both this product.
template <bool kTanh>
void Affine(const Vec* in, int rows_in, const float* w, const float* b, int cols_padded, Vec* out,
            Prefetcher* prefetch = nullptr) {
  for (int j0 = 0; j0 < cols_padded; j0 += kGateChunk) {
    if (prefetch != nullptr) prefetch->Issue(kPrefetchLines);
    Vec acc[kGateChunk][kCols];
    for (int j = 0; j < kGateChunk; ++j)
      for (int c = 0; c < kCols; ++c) acc[j][c] = Splat(b == nullptr ? 0.0f : b[j0 + j]);
    for (int k = 0; k < rows_in; ++k) {
      const float* wk = w + k * cols_padded + j0;
      Vec x[kCols];
      for (int c = 0; c < kCols; ++c) x[c] = in[k * kCols + c];
      for (int j = 0; j < kGateChunk; ++j) {
        const Vec wj = Splat(wk[j]);
        for (int c = 0; c < kCols; ++c) acc[j][c] += x[c] * wj;
      }
    }
    for (int j = 0; j < kGateChunk; ++j)
      for (int c = 0; c < kCols; ++c) out[(j0 + j) * kCols + c] = kTanh ? Tanh(acc[j][c]) : acc[j][c];
  }
}


inline int RoundUp4(int x) { return (x + 3) / 4 * 4; }

inline int RoundUp(int x) { return (x + kGateChunk - 1) / kGateChunk * kGateChunk; }

// The weight inputs the ops take (an op without an input layer declares none: empty lists).
struct WeightInputs {
  ::tensorflow::Status Read(OpKernelContext* context) {
    TF_RETURN_IF_ERROR(context->input_list("kernels", &kernels));
    TF_RETURN_IF_ERROR(context->input_list("biases", &biases));
    int start, stop;
    if (!context->op_kernel().InputRange("input_kernel", &start, &stop).ok()) return ::tensorflow::OkStatus();
    TF_RETURN_IF_ERROR(context->input_list("input_kernel", &input_kernel));
    return context->input_list("input_bias", &input_bias);
  }
  OpInputList kernels, biases, input_kernel, input_bias;
};

// The stack's sizes, its weights padded for Affine, and the block-level steps shared by the
// forward and backward ops.
class Stack {
 public:
  // raw_size inputs per row; with `embed`, an ELU layer maps them to the stack's in_size inputs.
  Stack(int raw_size, int in_size, bool embed, int hidden, int layers)
      : raw_size(raw_size), in_size(in_size), embed(embed), hidden(hidden), layers(layers) {
    padded = RoundUp(4 * hidden);
    lstm_width = 2 * layers * hidden;
    embed_padded = RoundUp(in_size);
  }

  int rows_in(int l) const { return (l == 0 ? in_size : hidden) + hidden; }
  int64_t xh_offset(int l) const { return l == 0 ? 0 : (in_size + hidden + (l - 1) * 2 * hidden) * kCols; }

  // The weights as [rows_in, padded] (forward) and, for the backward op, transposed as
  // [padded, RoundUp(rows_in)].
  void SetWeights(const WeightInputs& inputs, bool transposed) {
    const OpInputList &kernels = inputs.kernels, &biases = inputs.biases;
    const OpInputList &input_kernel = inputs.input_kernel, &input_bias = inputs.input_bias;
    if (embed) {
      const float* w = input_kernel[0].flat<float>().data();
      embed_w.assign(raw_size * embed_padded, 0.0f);
      embed_b.assign(embed_padded, 0.0f);
      embed_w_t.assign(embed_padded * RoundUp(raw_size), 0.0f);
      for (int k = 0; k < raw_size; ++k)
        for (int j = 0; j < in_size; ++j) {
          embed_w[k * embed_padded + j] = w[k * in_size + j];
          embed_w_t[j * RoundUp(raw_size) + k] = w[k * in_size + j];
        }
      std::copy(input_bias[0].flat<float>().data(), input_bias[0].flat<float>().data() + in_size, embed_b.data());
    }
    weights.assign(layers, {});
    bias.assign(layers, {});
    weights_t.assign(layers, {});
    for (int l = 0; l < layers; ++l) {
      const int rows = rows_in(l);
      const float* w = kernels[l].flat<float>().data();
      weights[l].assign(rows * padded, 0.0f);
      bias[l].assign(padded, 0.0f);
      for (int k = 0; k < rows; ++k) std::copy(w + k * 4 * hidden, w + (k + 1) * 4 * hidden, &weights[l][k * padded]);
      std::copy(biases[l].flat<float>().data(), biases[l].flat<float>().data() + 4 * hidden, bias[l].data());
      if (transposed) {
        const int rows_padded = RoundUp(rows);
        weights_t[l].assign(padded * rows_padded, 0.0f);
        for (int k = 0; k < rows; ++k)
          for (int j = 0; j < 4 * hidden; ++j) weights_t[l][j * rows_padded + k] = w[k * 4 * hidden + j];
      }
    }
  }

  // One block through the stack: x (raw_size), old state (lstm_width) -> new state.  Keeps the
  // embedding (embed_padded), each layer's [x, h] (at xh_offset(l)), its gates t (padded per
  // layer) and tanh(c') (hidden per layer) for the backward step.
  void Forward(const Vec* x, const Vec* old_state, Vec* new_state, Vec* emb, Vec* xh, Vec* gates,
               Vec* tanh_c, Prefetcher* prefetch = nullptr) const {
    if (embed) {
      Affine<false>(x, raw_size, embed_w.data(), embed_b.data(), embed_padded, emb, prefetch);
      for (int j = 0; j < in_size * kCols; ++j) emb[j] = Elu(emb[j]);
    }
    const Vec* layer_in = embed ? emb : x;
    int size_in = in_size;
    for (int l = 0; l < layers; ++l) {
      const Vec* h_old = old_state + 2 * l * hidden * kCols;
      const Vec* c_old = h_old + hidden * kCols;
      Vec* h_new = new_state + 2 * l * hidden * kCols;
      Vec* c_new = h_new + hidden * kCols;
      Vec* xh_l = xh + xh_offset(l);
      std::copy(layer_in, layer_in + size_in * kCols, xh_l);
      std::copy(h_old, h_old + hidden * kCols, xh_l + size_in * kCols);
      Vec* t = gates + l * padded * kCols;
      Affine<true>(xh_l, size_in + hidden, weights[l].data(), bias[l].data(), padded, t, prefetch);
      const Vec* i = t;
      const Vec* f = i + hidden * kCols;
      const Vec* g = f + hidden * kCols;
      const Vec* o = g + hidden * kCols;
      Vec* tc = tanh_c + l * hidden * kCols;
      for (int j = 0; j < hidden * kCols; ++j) {
        const Vec c = 0.5f * ((1.0f + f[j]) * c_old[j] + (1.0f + i[j]) * g[j]);
        c_new[j] = c;
        tc[j] = Tanh(c);
        h_new[j] = 0.5f * (1.0f + o[j]) * tc[j];
      }
      layer_in = h_new;
      size_in = hidden;
    }
  }

  // The backward step of one block after Forward: from the gradients of the top output and of
  // the new state, the gradients of the input and the old state, and each layer's gradient of
  // its gate pre-activations (dz, padded per layer), from which the caller sums the weights'.
  void Backward(const Vec* old_state, const Vec* gates, const Vec* tanh_c, const Vec* d_out,
                const Vec* d_new_state, Vec* d_x, Vec* d_old_state, Vec* dz_layers, Vec* d_xh, Vec* d_above,
                Prefetcher* prefetch = nullptr) const {
    std::copy(d_out, d_out + hidden * kCols, d_above);
    for (int l = layers - 1; l >= 0; --l) {
      const Vec* c_old = old_state + (2 * l + 1) * hidden * kCols;
      const Vec* dh_new = d_new_state + 2 * l * hidden * kCols;
      const Vec* dc_new = dh_new + hidden * kCols;
      const Vec* t = gates + l * padded * kCols;
      const Vec* i = t;
      const Vec* f = i + hidden * kCols;
      const Vec* g = f + hidden * kCols;
      const Vec* o = g + hidden * kCols;
      const Vec* tc = tanh_c + l * hidden * kCols;
      Vec* dz = dz_layers + l * padded * kCols;
      Vec* dzi = dz;
      Vec* dzf = dzi + hidden * kCols;
      Vec* dzg = dzf + hidden * kCols;
      Vec* dzo = dzg + hidden * kCols;
      Vec* dh_old = d_old_state + 2 * l * hidden * kCols;
      Vec* dc_old = dh_old + hidden * kCols;
      for (int j = 0; j < hidden * kCols; ++j) {
        const Vec dh = dh_new[j] + d_above[j];
        const Vec dc = dc_new[j] + dh * 0.5f * (1.0f + o[j]) * (1.0f - tc[j] * tc[j]);
        dzo[j] = dh * 0.5f * tc[j] * (1.0f - o[j] * o[j]);
        dzi[j] = dc * 0.5f * g[j] * (1.0f - i[j] * i[j]);
        dzg[j] = dc * 0.5f * (1.0f + i[j]) * (1.0f - g[j] * g[j]);
        dzf[j] = dc * 0.5f * c_old[j] * (1.0f - f[j] * f[j]);
        dc_old[j] = dc * 0.5f * (1.0f + f[j]);
      }
      const int rows = rows_in(l);
      Affine<false>(dz, padded, weights_t[l].data(), nullptr, RoundUp(rows), d_xh, prefetch);
      const int size_in = rows - hidden;
      std::copy(d_xh + size_in * kCols, d_xh + rows * kCols, dh_old);
      std::copy(d_xh, d_xh + size_in * kCols, l == 0 ? d_x : d_above);
    }
  }

  // The embedding's backward step: from the gradient of its output (d_x, in_size), the gradient
  // of its pre-activation (dz, embed_padded; TF's EluGrad: activations < 0 ? (activations + 1) d : d)
  // and of the raw input (d_raw, RoundUp(raw_size)).
  void EmbedBackward(const Vec* emb, const Vec* d_x, Vec* dz, Vec* d_raw) const {
    for (int j = 0; j < in_size * kCols; ++j) dz[j] = emb[j] < 0.0f ? (emb[j] + 1.0f) * d_x[j] : d_x[j];
    Affine<false>(dz, embed_padded, embed_w_t.data(), nullptr, RoundUp(raw_size), d_raw);
  }

  int raw_size, in_size;
  bool embed;
  int hidden, layers, padded, lstm_width, embed_padded;
  std::vector<std::vector<float>> weights, bias, weights_t;
  std::vector<float> embed_w, embed_b, embed_w_t;
};

// Copies `cols` features of a block's `rows` rows (row stride `stride`) into the feature-major
// buffer dst ([cols, kBlock]; rows past `rows` are zero), and back.
void LoadBlock(const float* src, int64_t stride, int cols, int rows, float* dst) {
#if defined(__AVX512F__)
  if (rows == kBlock) {
    for (int c = 0; c < kCols; ++c) LoadTransposed(src + c * kLanes * stride, stride, cols, dst + c * kLanes);
    return;
  }
#endif
  if (rows < kBlock) std::fill(dst, dst + cols * kBlock, 0.0f);
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < cols; ++k) dst[k * kBlock + r] = src[r * stride + k];
}

void StoreBlock(const float* src, int cols, int rows, float* dst, int64_t stride) {
#if defined(__AVX512F__)
  if (rows == kBlock) {
    for (int c = 0; c < kCols; ++c) StoreTransposed(src + c * kLanes, cols, dst + c * kLanes * stride, stride);
    return;
  }
#endif
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < cols; ++k) dst[r * stride + k] = src[k * kBlock + r];
}

// Outputs of at least this many bytes are written by StreamOut: they outgrow the caches.
constexpr int64_t kStreamBytes = 16 << 20;

// Copies `count` floats from src to dst; with `stream`, bypassing the caches (a plain store
// first reads every line it writes, a third of the traffic of a step over a large state).  A
// small output stays in the cache, where the next op reads it.
inline void StreamOut(const float* src, int64_t count, float* dst, bool stream) {
#if defined(__AVX512F__)
  if (stream && (reinterpret_cast<uintptr_t>(dst) & 63) == 0 && count % 16 == 0) {
    for (int64_t i = 0; i < count; i += 16) _mm512_stream_ps(dst + i, _mm512_load_ps(src + i));
    return;
  }
#endif
  std::copy(src, src + count, dst);
}



inline float* Floats(std::vector<Vec>& v) { return reinterpret_cast<float*>(v.data()); }

// Checks the shapes of the ops' state and weights for n rows of raw_size inputs each, and sets
// the stack they describe.
::tensorflow::Status CheckStack(int64_t n, int raw_size, const Tensor& state, int prefix_cols, const WeightInputs& w,
                                Stack* stack) {
  const OpInputList &kernels = w.kernels, &biases = w.biases, &input_kernel = w.input_kernel;
  const OpInputList& input_bias = w.input_bias;
  if (state.dims() != 2) return InvalidArgument("state must be a matrix [n, ...], got ", state.shape().DebugString());
  if (biases[0].dims() != 1) return InvalidArgument("biases must be vectors [4 * hidden]");
  const int layers = kernels.size();
  const int hidden = biases[0].dim_size(0) / 4;
  const bool embed = input_kernel.size() == 1;
  int in_size = raw_size;
  if (embed) {
    if (input_kernel[0].dims() != 2 || input_kernel[0].dim_size(0) != in_size || input_bias[0].dims() != 1 ||
        input_bias[0].dim_size(0) != input_kernel[0].dim_size(1))
      return InvalidArgument("the input layer needs kernel [", in_size, ", E] and bias [E], got ",
                             input_kernel[0].shape().DebugString(), " and ", input_bias[0].shape().DebugString());
    in_size = input_kernel[0].dim_size(1);
  }
  *stack = Stack(raw_size, in_size, embed, hidden, layers);
  const int width = prefix_cols + stack->lstm_width;
  if (state.dim_size(0) != n || state.dim_size(1) != width)
    return InvalidArgument("state must be [n, leading columns (new_prefix or moments) + 2 * layers * hidden] = [", n, ", ", width,
                           "], got ", state.shape().DebugString());
  for (int l = 0; l < layers; ++l) {
    const int rows_in = stack->rows_in(l);
    if (kernels[l].dims() != 2 || kernels[l].dim_size(0) != rows_in || kernels[l].dim_size(1) != 4 * hidden ||
        biases[l].dims() != 1 || biases[l].dim_size(0) != 4 * hidden)
      return InvalidArgument("layer ", l, " needs kernel [", rows_in, ", ", 4 * hidden, "] and bias [", 4 * hidden,
                             "], got ", kernels[l].shape().DebugString(), " and ", biases[l].shape().DebugString());
  }
  return ::tensorflow::OkStatus();
}

// Where a block of the n rows lies: its first row, its rows (kBlock but for the last block) and
// the next block's rows (0 after the last), which the ops prefetch.
struct BlockRows {
  BlockRows(int64_t block, int64_t n)
      : row0(block * kBlock), rows(static_cast<int>(std::min<int64_t>(kBlock, n - row0))),
        next(std::max<int64_t>(0, std::min<int64_t>(kBlock, n - row0 - kBlock))) {}
  int64_t row0;
  int rows;
  int64_t next;
};

// Runs work(first_block, last_block) over the blocks of n rows on TF's CPU worker threads,
// each shard's streamed stores fenced before the op completes: the forward ops' loop.
template <class Work>
void ShardBlocks(OpKernelContext* context, const Stack& stack, int64_t n, Work work) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int64_t cost = static_cast<int64_t>(kBlock) * 2 * stack.layers * (2 * stack.hidden) * 4 * stack.hidden;
  auto* threads = context->device()->tensorflow_cpu_worker_threads();
  ::tensorflow::Shard(threads->num_threads, threads->workers, blocks, cost, [&](int64_t first, int64_t last) {
    work(first, last);
#if defined(__AVX512F__)
    _mm_sfence();
#endif
  });
}

// Per-block scratch of the ops, feature-major.
struct Scratch {
  explicit Scratch(const Stack& s)
      : x(s.raw_size * kCols), old_state(s.lstm_width * kCols), new_state(s.lstm_width * kCols),
        emb(s.embed_padded * kCols), xh(s.xh_offset(s.layers)), gates(s.layers * s.padded * kCols),
        tanh_c(s.layers * s.hidden * kCols) {}
  std::vector<Vec> x, old_state, new_state, emb, xh, gates, tanh_c;
};
}  // namespace
}  // namespace l2o_tf

#endif  // L2O_TF_KERNELS_LSTM_CORE_H_
