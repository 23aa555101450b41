# Makefile - builds and runs the C core's own test program, on its own, with
# no Python involved: csrc/tests/test_core.c linked with the CPU core
# (csrc/core/validate.c, csrc/core/cpu.c). The Python extension is built by
# setup.py, not here.
#
#   make test-core        -O2 build, run
#   make test-core-asan   AddressSanitizer + UndefinedBehaviorSanitizer build, run
#
# Same warning and floating-point flags as setup.py: no FMA contraction, no
# fast-math, warnings are errors.

CC ?= cc
TEST_CFLAGS = -std=c11 -Wall -Wextra -Werror -ffp-contract=off -fno-fast-math -fopenmp
ASAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -g -O1 -fno-omit-frame-pointer

CORE_SRC = csrc/core/validate.c csrc/core/cpu.c
CORE_HDR = csrc/axis_steer.h csrc/core/internal.h csrc/core/convert.h
TEST_SRC = csrc/tests/test_core.c

.PHONY: test-core test-core-asan clean-core

csrc/tests/test_core: $(TEST_SRC) $(CORE_SRC) $(CORE_HDR)
	$(CC) $(TEST_CFLAGS) -O2 -o $@ $(TEST_SRC) $(CORE_SRC) -lm

build/test_core_asan: $(TEST_SRC) $(CORE_SRC) $(CORE_HDR)
	mkdir -p build
	$(CC) $(TEST_CFLAGS) $(ASAN_FLAGS) -o $@ $(TEST_SRC) $(CORE_SRC) -lm

test-core: csrc/tests/test_core
	./csrc/tests/test_core

test-core-asan: build/test_core_asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./build/test_core_asan

clean-core:
	rm -f csrc/tests/test_core build/test_core_asan
