/*
 * C baseline for bench/ioctl.ts: the same ioctl loops a C VMM would run.
 *
 * usage: ioctl <fifo> <iterations> <failure-iterations>
 *   success: FIONREAD on the FIFO (opened O_RDWR; the caller keeps 5 bytes in it), int out-arg
 *   address: the same call, the pointer passed as an unsigned long
 *   failure: TCGETS on /dev/null (ENOTTY), errno read after each call
 * Prints one JSON object with ns per call for each loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s <fifo> <iterations> <failure-iterations>\n", argv[0]);
    return 2;
  }
  long n = atol(argv[2]);
  long nfail = atol(argv[3]);
  int fd = open(argv[1], O_RDWR | O_CLOEXEC);
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (fd < 0 || null_fd < 0) {
    perror("setup");
    return 1;
  }
  /* volatile sinks keep -O2 from dropping or hoisting the loop bodies. */
  volatile int sink = 0;
  int avail = 0;
  unsigned char termios_buf[64];

  for (long i = 0; i < n / 50; i++) sink += ioctl(fd, FIONREAD, &avail);

  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    if (ioctl(fd, FIONREAD, &avail) < 0) return 1;
    sink += avail;
  }
  double success = (now_ns() - t0) / (double)n;

  t0 = now_ns();
  for (long i = 0; i < n; i++) {
    if (ioctl(fd, FIONREAD, (unsigned long)&avail) < 0) return 1;
    sink += avail;
  }
  double address = (now_ns() - t0) / (double)n;

  t0 = now_ns();
  for (long i = 0; i < nfail; i++) {
    if (ioctl(null_fd, TCGETS, termios_buf) != -1) return 1;
    sink += errno;
  }
  double failure = (now_ns() - t0) / (double)nfail;

  if (avail != 5 || sink == 0) return 1;
  printf("{\"success\": %.2f, \"address\": %.2f, \"failure\": %.2f}\n", success, address, failure);
  return 0;
}
