// One step of LSTMStack (l2o_tf/rules/lstm.py) for every coordinate, fused on the CPU.
//
// The TF/XLA step writes each layer's [n, 4H] gate pre-activations to memory and reads them
// back for the activations: for a 20-unit LSTM that traffic, not the matmul, bounds a
// learned optimizer's step.  This kernel takes a few coordinates at a time through the whole
// stack with their gates in registers.  Its math is LSTMStack.step's, formula for formula:
// the caller passes the kernels and biases already multiplied by the gate scale, and
//   t = tanh([x, h] W + b);  c' = ((1 + f) c + (1 + i) g) / 2;  h' = (1 + o) tanh(c') / 2.
// tanh is Eigen's float rational approximation, the one TF's own CPU tanh uses, so the two
// steps agree to float rounding (the matmul's summation order differs).  An optional ELU input
// layer (RNNprop's embedding), tf.nn.elu(inputs W + b), runs first in the same pass.
// L2oLstmStackStepGrad is its gradient, so that meta-training unrolls can run it too.

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

// out[j] = sum_k in[k] w[k, j] (+ b[j]) (then tanh) for the block's coordinates; in[k] and
// out[j] are kCols vectors each.  w is [rows_in, cols_padded] with the columns padded to
// whole chunks (zero weights and bias), so the chunk loop has no tail.  The forward step's
// gates and the backward step's input gradients (with w transposed) are both this product.
template <bool kTanh>
void Affine(const Vec* in, int rows_in, const float* w, const float* b, int cols_padded, Vec* out) {
  for (int j0 = 0; j0 < cols_padded; j0 += kGateChunk) {
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

inline int RoundUp4(int x) { return (x + 3) / 4 * 4; }

inline int RoundUp(int x) { return (x + kGateChunk - 1) / kGateChunk * kGateChunk; }

// The weight inputs both ops take.
struct WeightInputs {
  ::tensorflow::Status Read(OpKernelContext* context) {
    TF_RETURN_IF_ERROR(context->input_list("kernels", &kernels));
    TF_RETURN_IF_ERROR(context->input_list("biases", &biases));
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
               Vec* tanh_c) const {
    if (embed) {
      Affine<false>(x, raw_size, embed_w.data(), embed_b.data(), embed_padded, emb);
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
      Affine<true>(xh_l, size_in + hidden, weights[l].data(), bias[l].data(), padded, t);
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
                const Vec* d_new_state, Vec* d_x, Vec* d_old_state, Vec* dz_layers, Vec* d_xh, Vec* d_above) const {
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
      Affine<false>(dz, padded, weights_t[l].data(), nullptr, RoundUp(rows), d_xh);
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

// Asks for the next block's rows ahead of use: the state rows stream from memory (an unroll's
// states outgrow the caches) and their loads otherwise stall the transposes.
inline void PrefetchBlock(const float* src, int64_t stride, int cols, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r)
    for (int k = 0; k < cols; k += 64 / sizeof(float)) __builtin_prefetch(src + r * stride + k);
}

// Copies a block's `rows` features (kCols vectors each) into slot `slot` of a super-block
// buffer laid out [rows, kStride] vectors: what AccumulateOuter sums over.
template <int kStride>
inline void CopyToSlot(const Vec* src, int rows, int slot, Vec* super) {
  for (int k = 0; k < rows; ++k) std::copy(src + k * kCols, src + (k + 1) * kCols, super + k * kStride + slot * kCols);
}

inline float* Floats(std::vector<Vec>& v) { return reinterpret_cast<float*>(v.data()); }

// Checks the shapes shared by both ops and sets the stack they describe.
::tensorflow::Status CheckStack(const Tensor& inputs, const Tensor& state, int prefix_cols, const WeightInputs& w,
                                Stack* stack) {
  const OpInputList &kernels = w.kernels, &biases = w.biases, &input_kernel = w.input_kernel;
  const OpInputList& input_bias = w.input_bias;
  if (inputs.dims() != 2 || state.dims() != 2) return InvalidArgument("inputs and state must be matrices [n, ...]");
  if (biases[0].dims() != 1) return InvalidArgument("biases must be vectors [4 * hidden]");
  const int layers = kernels.size();
  const int64_t n = inputs.dim_size(0);
  const int hidden = biases[0].dim_size(0) / 4;
  const bool embed = input_kernel.size() == 1;
  int in_size = inputs.dim_size(1);
  if (embed) {
    if (input_kernel[0].dims() != 2 || input_kernel[0].dim_size(0) != in_size || input_bias[0].dims() != 1 ||
        input_bias[0].dim_size(0) != input_kernel[0].dim_size(1))
      return InvalidArgument("the input layer needs kernel [", in_size, ", E] and bias [E], got ",
                             input_kernel[0].shape().DebugString(), " and ", input_bias[0].shape().DebugString());
    in_size = input_kernel[0].dim_size(1);
  }
  *stack = Stack(inputs.dim_size(1), in_size, embed, hidden, layers);
  const int width = prefix_cols + stack->lstm_width;
  if (state.dim_size(0) != n || state.dim_size(1) != width)
    return InvalidArgument("state must be [n, new_prefix columns + 2 * layers * hidden] = [", n, ", ", width,
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

// Per-block scratch of both ops, feature-major.
struct Scratch {
  explicit Scratch(const Stack& s)
      : x(s.raw_size * kCols), old_state(s.lstm_width * kCols), new_state(s.lstm_width * kCols),
        emb(s.embed_padded * kCols), xh(s.xh_offset(s.layers)), gates(s.layers * s.padded * kCols),
        tanh_c(s.layers * s.hidden * kCols) {}
  std::vector<Vec> x, old_state, new_state, emb, xh, gates, tanh_c;
};

class LstmStackStepOp : public OpKernel {
 public:
  explicit LstmStackStepOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& inputs = context->input(0);
    const Tensor& state = context->input(1);
    const Tensor& prefix = context->input(2);
    WeightInputs weights;
    OP_REQUIRES_OK(context, weights.Read(context));
    OP_REQUIRES(context, prefix.dims() == 2 && prefix.dim_size(0) == inputs.dim_size(0),
                InvalidArgument("new_prefix must be a matrix [n, k], got ", prefix.shape().DebugString()));
    Stack stack(0, 0, false, 0, 0);
    OP_REQUIRES_OK(context, CheckStack(inputs, state, prefix.dim_size(1), weights, &stack));
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

    auto work = [&](int64_t first_block, int64_t last_block) {
      Scratch b(stack);
      for (int64_t block = first_block; block < last_block; ++block) {
        const int64_t row0 = block * kBlock;
        const int rows = static_cast<int>(std::min<int64_t>(kBlock, n - row0));
        const int64_t next = std::max<int64_t>(0, std::min<int64_t>(kBlock, n - row0 - kBlock));
        PrefetchBlock(x_in + (row0 + kBlock) * in_size, in_size, in_size, next);
        PrefetchBlock(s_in + (row0 + kBlock) * width, width, width, next);
        LoadBlock(x_in + row0 * in_size, in_size, in_size, rows, Floats(b.x));
        LoadBlock(s_in + row0 * width + k0, width, lstm_width, rows, Floats(b.old_state));
        stack.Forward(b.x.data(), b.old_state.data(), b.new_state.data(), b.emb.data(), b.xh.data(), b.gates.data(),
                      b.tanh_c.data());
        for (int64_t row = row0; row < row0 + rows; ++row)
          std::copy(p_in + row * k0, p_in + (row + 1) * k0, s_out + row * width);
        const float* nf = Floats(b.new_state);
        StoreBlock(nf, lstm_width, rows, s_out + row0 * width + k0, width);
        StoreBlock(nf + 2 * (stack.layers - 1) * hidden * kBlock, hidden, rows, out + row0 * hidden, hidden);
      }
    };
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    const int64_t cost = static_cast<int64_t>(kBlock) * 2 * stack.layers * (2 * hidden) * 4 * hidden;
    auto* threads = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(threads->num_threads, threads->workers, blocks, cost, work);
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
    OP_REQUIRES(context, state.dims() == 2 && biases[0].dims() == 1,
                InvalidArgument("state must be a matrix [n, width] and biases vectors"));
    Stack stack(0, 0, false, 0, 0);
    const int lstm_width_guess = 2 * kernels.size() * (biases[0].dim_size(0) / 4);
    const int k0 = state.dim_size(1) - lstm_width_guess;
    OP_REQUIRES(context, k0 >= 0, InvalidArgument("state is narrower than the LSTM state"));
    OP_REQUIRES_OK(context, CheckStack(inputs, state, k0, weights, &stack));
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
          const int64_t row0 = block * kBlock;
          const int rows = static_cast<int>(std::min<int64_t>(kBlock, n - row0));
          const int64_t next = std::max<int64_t>(0, std::min<int64_t>(kBlock, n - row0 - kBlock));
          PrefetchBlock(x_in + (row0 + kBlock) * raw_size, raw_size, raw_size, next);
          PrefetchBlock(s_in + (row0 + kBlock) * width, width, width, next);
          PrefetchBlock(do_in + (row0 + kBlock) * hidden, hidden, hidden, next);
          PrefetchBlock(ds_in + (row0 + kBlock) * width, width, width, next);
          LoadBlock(x_in + row0 * raw_size, raw_size, raw_size, rows, Floats(b.x));
          LoadBlock(s_in + row0 * width + k0, width, lstm_width, rows, Floats(b.old_state));
          LoadBlock(do_in + row0 * hidden, hidden, hidden, rows, Floats(d_out));
          LoadBlock(ds_in + row0 * width + k0, width, lstm_width, rows, Floats(d_new));
          stack.Forward(b.x.data(), b.old_state.data(), b.new_state.data(), b.emb.data(), b.xh.data(),
                        b.gates.data(), b.tanh_c.data());
          stack.Backward(b.old_state.data(), b.gates.data(), b.tanh_c.data(), d_out.data(), d_new.data(),
                         d_x.data(), d_old.data(), dz.data(), d_xh.data(), d_above.data());
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
