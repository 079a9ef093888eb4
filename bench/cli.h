// bench/cli.h — the option reader both drivers (//bench and //bench:server)
// use: an option's value given as "--name=VALUE" or as "--name VALUE".
#ifndef BENCH_CLI_H
#define BENCH_CLI_H

#include <cstring>

// If argv[*i] is the option `name` with a value, returns the value (and, for
// the two-word form, moves *i past it); otherwise NULL, *i unchanged. A
// two-word option that is the last argument has no value: NULL.
inline const char* OptionValue(int argc, char** argv, int* i, const char* name) {
  const char* a = argv[*i];
  size_t n = std::strlen(name);
  if (std::strncmp(a, name, n) != 0) return nullptr;
  if (a[n] == '=') return a + n + 1;
  if (a[n] == '\0' && *i + 1 < argc) return argv[++*i];
  return nullptr;
}

#endif  // BENCH_CLI_H
