// Divmod<int32_t> (csrc/common.cuh) against the hardware's own division, on the host
// through the emulation headers: every divisor up to 70000, the powers of two and
// their neighbours, 2^31 - 1 and 20000 random divisors, each with edge and random
// dividends in [0, 2^31).  Prints "checked N bad 0" and exits 0 when all agree.
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda_runtime.h"
#include "common.cuh"

int main() {
  using fastcnn::Divmod;
  constexpr std::int64_t kMax = 0x7fffffff;
  std::mt19937_64 rng(1);
  long checked = 0, bad = 0;
  auto check = [&](std::int64_t d, std::int64_t n) {
    if (n < 0 || n > kMax) return;
    const Divmod<std::int32_t> dm(d);
    std::int32_t r;
    const std::int32_t q = dm.divmod(static_cast<std::int32_t>(n), r);
    ++checked;
    if (q != n / d || r != n % d) {
      if (bad++ < 5) std::printf("d=%lld n=%lld: got %d rem %d\n", (long long)d, (long long)n, q, r);
    }
  };
  std::vector<std::int64_t> divisors;
  for (std::int64_t d = 1; d <= 70000; ++d) divisors.push_back(d);
  for (int i = 1; i < 31; ++i)
    for (std::int64_t d = (std::int64_t{1} << i) - 1; d <= (std::int64_t{1} << i) + 1; ++d)
      divisors.push_back(d);
  divisors.push_back(kMax);
  for (int i = 0; i < 20000; ++i) divisors.push_back(1 + static_cast<std::int64_t>(rng() % kMax));
  for (std::int64_t d : divisors) {
    if (d > kMax) continue;
    const std::int64_t edges[] = {0, 1, d - 1, d, d + 1, 2 * d - 1, 2 * d, kMax - 1, kMax};
    for (std::int64_t n : edges) check(d, n);
    for (int i = 0; i < 100; ++i) check(d, static_cast<std::int64_t>(rng() % (kMax + 1)));
  }
  std::printf("checked %ld bad %ld\n", checked, bad);
  return bad == 0 ? 0 : 1;
}
