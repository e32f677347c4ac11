// The statistics kernels' bodies as functions of (block, thread): instance_stats.cu runs them on the
// device, host_emulation.cpp on the host, thread by thread. Per-chunk Welford partials, merged
// exactly (Chan et al.): never E[x^2] - E[x]^2, which loses digits in fp32 over millions of positions.
#pragma once

#include "dtype_util.cuh"
#include "microast_kernels.h"

namespace microast {
namespace stats {

// A block is 64 channels (threadIdx.x) x kLanes pixel lanes (threadIdx.y), and a thread keeps kInFlight
// loads in flight: with 4 lanes and one load at a time (one block an SM) each thread waited out every
// load's latency in turn, far below the memory's bandwidth (docs/kernel_notes.md).
constexpr int kLanes = 16;
constexpr int kThreads = MICROAST_CHANNELS * kLanes;
constexpr int kInFlight = 4;
constexpr int kChunk = 4096;  // pixels a block reduces: counts stay exact in fp32

__host__ __device__ inline long long chunk_count(long long pixels) { return (pixels + kChunk - 1) / kChunk; }

template <typename F>
__host__ __device__ inline void chan_merge(F& count, F& mean, F& m2, F count_b, F mean_b, F m2_b) {
  if (count_b == F(0)) return;
  const F total = count + count_b;
  const F delta = mean_b - mean;
  mean += delta * (count_b / total);
  m2 += m2_b + delta * delta * (count * count_b / total);
  count = total;
}

struct Shared {
  float lanes[3][kLanes][MICROAST_CHANNELS];  // count, mean, m2 of each lane
};

// Phase 1, every thread (channel c, lane): Welford over its lane's pixels of the chunk.
template <typename T>
__host__ __device__ inline void lane_partial(Shared& s, int c, int lane, int chunk, int n, const T* x, long long pixels) {
  const long long begin = static_cast<long long>(chunk) * kChunk;
  const long long end = begin + kChunk < pixels ? begin + kChunk : pixels;
  const T* base = x + static_cast<long long>(n) * pixels * MICROAST_CHANNELS + c;
  float count = 0.f, mean = 0.f, m2 = 0.f;
  const auto welford = [&](float v) {
    count += 1.f;
    const float delta = v - mean;
    mean += delta / count;
    m2 += delta * (v - mean);
  };
  long long p = begin + lane;
  // The lane's pixels in order (p, p + kLanes, ...), kInFlight loads issued before their updates.
  for (; p + (kInFlight - 1) * kLanes < end; p += kInFlight * kLanes) {
    float v[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) v[u] = to_float(base[(p + u * kLanes) * MICROAST_CHANNELS]);
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) welford(v[u]);
  }
  for (; p < end; p += kLanes) welford(to_float(base[p * MICROAST_CHANNELS]));
  s.lanes[0][lane][c] = count;
  s.lanes[1][lane][c] = mean;
  s.lanes[2][lane][c] = m2;
}

// Phase 2, lane 0 of each channel: the chunk's partial, into partials [n][chunk][count, mean, m2][64].
__host__ __device__ inline void chunk_partial(const Shared& s, int c, int chunk, int chunks, int n, float* partials) {
  float count = s.lanes[0][0][c], mean = s.lanes[1][0][c], m2 = s.lanes[2][0][c];
  for (int l = 1; l < kLanes; ++l) chan_merge(count, mean, m2, s.lanes[0][l][c], s.lanes[1][l][c], s.lanes[2][l][c]);
  float* out = partials + (static_cast<long long>(n) * chunks + chunk) * 3 * MICROAST_CHANNELS;
  out[c] = count;
  out[MICROAST_CHANNELS + c] = mean;
  out[2 * MICROAST_CHANNELS + c] = m2;
}

// The merge, one thread per (n, c), in float64 (counts beyond 2^24 stay exact).
__host__ __device__ inline void merge(int c, int n, const float* partials, int chunks, float eps, float* mean_out,
                                      float* std_out) {
  double count = 0.0, mean = 0.0, m2 = 0.0;
  for (int k = 0; k < chunks; ++k) {
    const float* p = partials + (static_cast<long long>(n) * chunks + k) * 3 * MICROAST_CHANNELS;
    chan_merge(count, mean, m2, static_cast<double>(p[c]), static_cast<double>(p[MICROAST_CHANNELS + c]),
               static_cast<double>(p[2 * MICROAST_CHANNELS + c]));
  }
  mean_out[n * MICROAST_CHANNELS + c] = static_cast<float>(mean);
  std_out[n * MICROAST_CHANNELS + c] = static_cast<float>(sqrt(m2 / (count - 1.0) + eps));  // unbiased
}

}  // namespace stats
}  // namespace microast
