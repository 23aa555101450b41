# Makefile - builds and runs the C core's own test program, on its own, with
# no Python involved: csrc/tests/test_core.c linked with the CPU core
# (csrc/core/validate.c, programs.c, cpu.c). The Python extension is built by
# setup.py, not here.
#
#   make test-core        -O2 build, run
#   make test-core-asan   AddressSanitizer + UndefinedBehaviorSanitizer build, run
#   make test-cuda-emulated
#                         the CUDA kernels (csrc/core/cuda.cu) run by a host
#                         emulator against the CPU core, under ASan + UBSan;
#                         no GPU or CUDA toolkit needed (csrc/tests/cuda_emulation)
#
# Same warning and floating-point flags as setup.py: no FMA contraction, no
# fast-math, warnings are errors.

CC ?= cc
TEST_CFLAGS = -std=c11 -Wall -Wextra -Werror -ffp-contract=off -fno-fast-math -fopenmp
ASAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -g -O1 -fno-omit-frame-pointer

CORE_SRC = csrc/core/validate.c csrc/core/programs.c csrc/core/cpu.c
CORE_HDR = csrc/axis_steer.h csrc/core/internal.h csrc/core/convert.h csrc/core/latch.h
TEST_SRC = csrc/tests/test_core.c

.PHONY: test-core test-core-asan test-cuda-emulated clean-core

csrc/tests/test_core: $(TEST_SRC) $(CORE_SRC) $(CORE_HDR)
	$(CC) $(TEST_CFLAGS) -O2 -o $@ $(TEST_SRC) $(CORE_SRC) -lm

build/test_core_asan: $(TEST_SRC) $(CORE_SRC) $(CORE_HDR)
	mkdir -p build
	$(CC) $(TEST_CFLAGS) $(ASAN_FLAGS) -o $@ $(TEST_SRC) $(CORE_SRC) -lm

test-core: csrc/tests/test_core
	./csrc/tests/test_core

test-core-asan: build/test_core_asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./build/test_core_asan

# ---- the CUDA kernels on the host emulator --------------------------------
# gen_emulated.py rewrites cuda.cu's kernel launches into emulator calls; the
# emulated <cuda_runtime.h> comes first on the include path; the grid is capped
# at 3 blocks (AXS_CUDA_MAX_BLOCKS) so small inputs run the grid-stride loops.
# EMU_CASES random cases after a fixed sweep of every launch configuration.

CXX ?= c++
PYTHON ?= python3
EMU = csrc/tests/cuda_emulation
EMU_OUT = build/cuda_emulation
EMU_CASES ?= 120
EMU_FLAGS = -std=c++20 -Wall -Wextra -Werror -ffp-contract=off -fno-fast-math -Wno-unknown-pragmas \
	-Icsrc -Icsrc/core -I$(EMU)/include -DAXS_CUDA_MAX_BLOCKS=3 $(ASAN_FLAGS)

$(EMU_OUT)/cuda_emu.cpp: csrc/core/cuda.cu $(EMU)/gen_emulated.py
	mkdir -p $(EMU_OUT)
	$(PYTHON) $(EMU)/gen_emulated.py csrc/core/cuda.cu $@

$(EMU_OUT)/cuda_emu.o: $(EMU_OUT)/cuda_emu.cpp $(EMU)/include/*.h $(CORE_HDR)
	$(CXX) $(EMU_FLAGS) -c $< -o $@

$(EMU_OUT)/test_cuda_emulated.o: $(EMU)/test_cuda_emulated.cpp $(EMU)/include/*.h $(CORE_HDR)
	mkdir -p $(EMU_OUT)
	$(CXX) $(EMU_FLAGS) -c $< -o $@

$(EMU_OUT)/core_%.o: csrc/core/%.c $(CORE_HDR)
	mkdir -p $(EMU_OUT)
	$(CC) $(TEST_CFLAGS) $(ASAN_FLAGS) -c $< -o $@

$(EMU_OUT)/test_cuda_emulated: $(EMU_OUT)/test_cuda_emulated.o $(EMU_OUT)/cuda_emu.o \
		$(EMU_OUT)/core_validate.o $(EMU_OUT)/core_programs.o $(EMU_OUT)/core_cpu.o
	$(CXX) $(ASAN_FLAGS) -fopenmp -o $@ $^ -lm

test-cuda-emulated: $(EMU_OUT)/test_cuda_emulated
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		./$(EMU_OUT)/test_cuda_emulated $(EMU_CASES)

clean-core:
	rm -f csrc/tests/test_core build/test_core_asan
	rm -rf $(EMU_OUT)
