/*
 * C baseline for bench/bitmap.ts: the same dirty-bitmap operations as
 * lib/vfio/dirty-bitmap.ts, written the way a C VMM would (u64 words), on the
 * same data (the same PRNG and generators, so no 64 MiB files change hands).
 *
 * usage: bitmap <npages> (a multiple of 64), then one command per line on stdin:
 *   pattern <random|clustered> <ppm> <seedA> <seedB>   generate A (the VMM
 *       bitmap) and B (the kernel bitmap); ppm = dirty pages per million
 *   reset                                              A back to as generated
 *   count | countRuns | countRunsBranchless | forEachRun | merge0 | merge3
 * Each command answers "<ms> <checksum>": the time of the operation alone,
 * and its result (for merges, the dirty pages after it), so the caller can
 * check that both sides computed the same thing. Driving it line by line lets
 * the caller interleave C and JS samples on a noisy machine.
 */
#define _POSIX_C_SOURCE 200112L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* mulberry32, bit-identical to the generator in bench/bitmap.ts. */
static uint32_t rng_state;
static uint32_t rng(void) {
  uint32_t t = (rng_state += 0x6D2B79F5u);
  t = (t ^ (t >> 15)) * (t | 1u);
  t ^= t + (t ^ (t >> 7)) * (t | 61u);
  return t ^ (t >> 14);
}

static void set_range(uint32_t *w, uint64_t npages, uint64_t start, uint64_t len) {
  uint64_t end = start + len > npages ? npages : start + len;
  for (uint64_t p = start; p < end; p++) w[p >> 5] |= 1u << (p & 31);
}

/* Same algorithm as generate() in bench/bitmap.ts. */
static void generate(uint32_t *w, uint64_t npages, const char *kind, uint32_t ppm, uint32_t seed) {
  uint64_t nwords32 = (npages + 63) / 64 * 2;
  memset(w, 0, nwords32 * 4);
  rng_state = seed;
  if (strcmp(kind, "random") == 0) {
    if (ppm == 500000) {
      for (uint64_t i = 0; i < nwords32; i++) w[i] = rng();
    } else {
      uint64_t k = npages * ppm / 1000000;
      for (uint64_t i = 0; i < k; i++) set_range(w, npages, rng() % npages, 1);
    }
  } else {
    uint64_t gap_mean = 64ull * (1000000 - ppm) / ppm;
    uint64_t p = rng() % (2 * gap_mean + 1);
    while (p < npages) {
      uint64_t len = 1 + rng() % 127;
      set_range(w, npages, p, len);
      p += len + 1 + rng() % (2 * gap_mean + 1);
    }
  }
}

static uint64_t popcount_all(const uint64_t *b, uint64_t nw) {
  uint64_t n = 0;
  for (uint64_t i = 0; i < nw; i++) n += (uint64_t)__builtin_popcountll(b[i]);
  return n;
}

/*
 * Runs = number of 0->1 transitions. Bits past npages are kept clear.
 * Two versions: skipping zero words (the usual C idiom, fast on sparse
 * bitmaps) and branch-free (fast when words are unpredictably zero or not);
 * the caller takes the better of the two as the baseline.
 */
static uint64_t count_runs(const uint64_t *b, uint64_t nw) {
  uint64_t runs = 0, carry = 0;
  for (uint64_t i = 0; i < nw; i++) {
    uint64_t w = b[i];
    if (w == 0) { carry = 0; continue; }
    runs += (uint64_t)__builtin_popcountll(w & ~((w << 1) | carry));
    carry = w >> 63;
  }
  return runs;
}

static uint64_t count_runs_branchless(const uint64_t *b, uint64_t nw) {
  uint64_t runs = 0, carry = 0;
  for (uint64_t i = 0; i < nw; i++) {
    uint64_t w = b[i];
    runs += (uint64_t)__builtin_popcountll(w & ~((w << 1) | carry));
    carry = w >> 63;
  }
  return runs;
}

/* OR a kernel bitmap (bit 0 = page first) into dst; bits past npages ignored. */
static void merge(uint64_t *restrict dst, const uint64_t *restrict src, uint64_t first, uint64_t npages) {
  uint64_t nw = (npages + 63) / 64, d = first >> 6;
  unsigned s = (unsigned)(first & 63);
  uint64_t tail = (npages & 63) ? (1ull << (npages & 63)) - 1 : ~0ull;
  if (s == 0) {
    for (uint64_t i = 0; i + 1 < nw; i++) dst[d + i] |= src[i];
    dst[d + nw - 1] |= src[nw - 1] & tail;
  } else {
    uint64_t carry = 0;
    for (uint64_t i = 0; i + 1 < nw; i++) {
      uint64_t w = src[i];
      dst[d + i] |= (w << s) | carry;
      carry = w >> (64 - s);
    }
    uint64_t w = src[nw - 1] & tail;
    dst[d + nw - 1] |= (w << s) | carry;
    if (w >> (64 - s)) dst[d + nw] |= w >> (64 - s);
  }
}

/* First page >= start whose bit equals `want` (0 or 1), or nbits. */
static uint64_t find_next(const uint64_t *b, uint64_t nbits, uint64_t start, uint64_t want) {
  if (start >= nbits) return nbits;
  uint64_t nw = (nbits + 63) / 64, i = start >> 6, flip = want ? 0 : ~0ull;
  uint64_t w = (b[i] ^ flip) & (~0ull << (start & 63));
  while (w == 0) {
    if (++i >= nw) return nbits;
    w = b[i] ^ flip;
  }
  uint64_t r = i * 64 + (uint64_t)__builtin_ctzll(w);
  return r < nbits ? r : nbits;
}

/* The callback's checksum: sum of start + len, mod 2^32 (bench/bitmap.ts computes the same). */
static uint32_t run_sink;
static void on_run(uint64_t start, uint64_t len) { run_sink += (uint32_t)(start + len); }

static void for_each_run(const uint64_t *b, uint64_t nbits, void (*cb)(uint64_t, uint64_t)) {
  uint64_t p = 0;
  for (;;) {
    uint64_t s = find_next(b, nbits, p, 1);
    if (s >= nbits) return;
    uint64_t e = find_next(b, nbits, s, 0);
    cb(s, e - s);
    p = e;
  }
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* External linkage, so the compiler must assume the timer and stdio calls
 * may read or change the bitmaps, and cannot hoist repeated work. */
uint64_t *bench_a, *bench_a0, *bench_b;

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s npages < commands\n", argv[0]);
    return 2;
  }
  uint64_t npages = strtoull(argv[1], NULL, 10);
  uint64_t nw = (npages + 63) / 64;
  /* One spare word after a: an unaligned merge may spill into it. */
  size_t bytes = ((nw + 1) * 8 + 4095) / 4096 * 4096;
  uint64_t *a = bench_a = aligned_alloc(4096, bytes);
  uint64_t *a0 = bench_a0 = aligned_alloc(4096, bytes);
  uint64_t *b = bench_b = aligned_alloc(4096, bytes);
  if (!a || !a0 || !b) return 1;
  char line[128], kind[32];
  unsigned ppm, seed_a, seed_b;
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    double t0 = now_ms(), ms = 0;
    unsigned long long check = 0;
    if (sscanf(line, "pattern %31[a-z] %u %u %u", kind, &ppm, &seed_a, &seed_b) == 4) {
      generate((uint32_t *)a0, npages, kind, ppm, seed_a);
      a0[nw] = 0;
      generate((uint32_t *)b, npages, kind, ppm, seed_b);
      memcpy(a, a0, (nw + 1) * 8);
    } else if (strcmp(line, "reset") == 0) {
      memcpy(a, a0, (nw + 1) * 8);
    } else if (strcmp(line, "count") == 0) {
      check = popcount_all(a, nw);
      ms = now_ms() - t0;
    } else if (strcmp(line, "countRuns") == 0) {
      check = count_runs(a, nw);
      ms = now_ms() - t0;
    } else if (strcmp(line, "countRunsBranchless") == 0) {
      check = count_runs_branchless(a, nw);
      ms = now_ms() - t0;
    } else if (strcmp(line, "forEachRun") == 0) {
      run_sink = 0;
      for_each_run(a, npages, on_run);
      ms = now_ms() - t0;
      check = run_sink;
    } else if (strcmp(line, "merge0") == 0) {
      merge(a, b, 0, npages);
      ms = now_ms() - t0;
      check = popcount_all(a, nw);
    } else if (strcmp(line, "merge3") == 0) {
      merge(a, b, 3, npages - 3);
      ms = now_ms() - t0;
      check = popcount_all(a, nw);
    } else {
      fprintf(stderr, "unknown command: %s\n", line);
      return 2;
    }
    printf("%.4f %llu\n", ms, check);
    fflush(stdout);
  }
  return 0;
}
