// Elementwise float math on Vec (lstm_core.h) that the whole-step kernels share: sqrt, Cephes'
// exp and log as in Eigen's pexp / plog, clipping and sign.
#ifndef L2O_TF_KERNELS_VEC_MATH_H_
#define L2O_TF_KERNELS_VEC_MATH_H_

#include "lstm_core.h"

namespace l2o_tf {
namespace {

typedef int IVec __attribute__((vector_size(kLanes * sizeof(int))));

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

// log(x) for normal x > 0: Cephes' logf, as in Eigen's plog, on x = m 2^e with m in
// [sqrt(1/2), sqrt(2)).
inline Vec Log(Vec x) {
  const IVec bits = (IVec)x;
  Vec e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, Vec);
  Vec m = (Vec)((bits & 0x807fffff) | 0x3f000000);  // in [0.5, 1)
  const auto small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const Vec z = m * m;
  Vec y = m * 7.0376836292e-2f - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z + e * -2.12194440e-4f - 0.5f * z;
  return (m + y) + e * 0.693359375f;
}

inline Vec Clip(Vec x, float low, float high) {
  x = x < low ? Splat(low) : x;
  return x > high ? Splat(high) : x;
}

inline Vec Sign(Vec x) { return x > 0.0f ? Splat(1.0f) : (x < 0.0f ? Splat(-1.0f) : x); }  // 0 and NaN stay

}  // namespace
}  // namespace l2o_tf

#endif  // L2O_TF_KERNELS_VEC_MATH_H_
