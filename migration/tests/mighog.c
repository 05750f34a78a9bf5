/* mighog: a migration test task. Holds MB MiB of patterned heap, ticks every 50 ms, and on
 * SIGUSR1 checks every word of the heap and logs the result with its network namespace, so a
 * test can tell that a restored copy has the same memory, runs on, and lives elsewhere.
 *
 *   mighog MB LOGFILE
 *
 * Log lines (appended; O_APPEND so a restored copy keeps writing at the end):
 *   ready pid=P mb=MB
 *   verify ok|bad ticks=T net=net:[INODE] [first_bad=I]
 * and on stdout, every 10 ticks: "out ticks=T" (a test can check that output keeps flowing).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_verify;
static void on_usr1(int sig) { (void)sig; want_verify = 1; }

static uint64_t pattern(uint64_t i) { return (i * 0x9E3779B97F4A7C15ULL) ^ 0xA5A5A5A55A5A5A5AULL; }

static void logline(int fd, const char *s) {
  size_t n = strlen(s);
  if (write(fd, s, n) != (ssize_t)n) _exit(3);
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: mighog MB LOGFILE\n"); return 2; }
  long mb = atol(argv[1]);
  if (mb <= 0 || mb > 65536) { fprintf(stderr, "mighog: bad MB\n"); return 2; }
  int log = open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (log < 0) { perror("mighog: log"); return 2; }
  size_t words = (size_t)mb * 1024 * 1024 / sizeof(uint64_t);
  uint64_t *heap = malloc(words * sizeof(uint64_t));
  if (!heap) { perror("mighog: malloc"); return 2; }
  for (size_t i = 0; i < words; i++) heap[i] = pattern(i);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  char line[256];
  snprintf(line, sizeof line, "ready pid=%d mb=%ld\n", (int)getpid(), mb);
  logline(log, line);
  unsigned long ticks = 0;
  struct timespec tick = {0, 50 * 1000 * 1000};
  for (;;) {
    nanosleep(&tick, NULL);
    ticks++;
    if (ticks % 10 == 0) {
      char out[64];
      int n = snprintf(out, sizeof out, "out ticks=%lu\n", ticks);
      if (write(1, out, (size_t)n) < 0) { /* stdout gone: keep running */ }
    }
    if (want_verify) {
      want_verify = 0;
      size_t bad = words;
      for (size_t i = 0; i < words; i++)
        if (heap[i] != pattern(i)) { bad = i; break; }
      char net[64] = "?";
      ssize_t n = readlink("/proc/self/ns/net", net, sizeof net - 1);
      if (n > 0) net[n] = 0;
      if (bad == words)
        snprintf(line, sizeof line, "verify ok ticks=%lu net=%s\n", ticks, net);
      else
        snprintf(line, sizeof line, "verify bad ticks=%lu net=%s first_bad=%zu\n", ticks, net, bad);
      logline(log, line);
    }
  }
}
