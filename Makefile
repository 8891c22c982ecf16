# ATCR appview and hold. `make` installs the build packages it lacks and builds bin/appview and
# bin/hold. `make test` installs what the tests use, checks the format and the lint, builds
# (plain and ASan+UBSan) and runs every test, fuzz corpora replayed. `make bench` runs the
# benchmarks, `make fuzz` the libFuzzer harnesses. `make run` / `make demo` start the services
# locally. Each installs only what it uses (tests/tools/install-deps.sh says what that is).

CC      ?= cc
JOBS    := $(shell nproc 2>/dev/null || echo 2)
PKGS    := libwebsockets hiredis jansson libcurl sqlite3 libuv libzstd libssl libcrypto
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes \
           -Wformat=2 -Wno-unused-parameter -Wvla
CPPFLAGS += -std=c11 -D_GNU_SOURCE -I. $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -MMD -MP
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lresolv -lm

# SAN=1 builds the same tree into build-asan/ with AddressSanitizer and UBSan; FUZZ=1 into
# build-fuzz/ with clang, for libFuzzer (`make fuzz`).
ifeq ($(SAN),1)
BUILD   := build-asan
CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
else ifeq ($(FUZZ),1)
BUILD   := build-fuzz
CC      := clang
CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
           -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=fuzzer,address,undefined
else
BUILD   := build
endif
BIN     := $(BUILD)/bin

ATPROTO_SRC := $(wildcard atproto/*.c)
CACHE_LUA   := $(wildcard cache/*.lua)
CACHE_SRC   := $(wildcard cache/*.c)
APPVIEW_SRC := $(wildcard appview/*.c)
HOLD_SRC    := $(wildcard hold/*.c)
UNIT_SRC    := $(wildcard tests/unit/*.c)
TOOL_SRC    := $(wildcard tests/tools/*.c)
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_SECONDS ?= 60

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

ATPROTO_OBJ := $(call obj,$(ATPROTO_SRC))
CACHE_OBJ   := $(call obj,$(CACHE_SRC)) $(if $(CACHE_LUA),$(BUILD)/cache/lua_scripts.o)
APPVIEW_OBJ := $(call obj,$(APPVIEW_SRC))
HOLD_OBJ    := $(call obj,$(HOLD_SRC))
LIBS        := $(BUILD)/libappview.a $(BUILD)/libhold.a $(BUILD)/libcache.a $(BUILD)/libatproto.a

UNIT_BIN := $(patsubst tests/unit/%.c,$(BIN)/unit/%,$(UNIT_SRC))
TOOL_BIN := $(patsubst tests/tools/%.c,$(BIN)/tools/%,$(TOOL_SRC))
# Each fuzz harness twice: with replay.c as a unit test that runs its saved corpus once (any
# compiler), and with libFuzzer (FUZZ=1 only).
FUZZ_REPLAY := $(patsubst tests/fuzz/%.c,$(BIN)/unit/%,$(FUZZ_SRC))
FUZZ_BIN    := $(patsubst tests/fuzz/%.c,$(BIN)/fuzz/%,$(FUZZ_SRC))
# Objects of the test programs are reached only through pattern rules, which would make them
# intermediate: deleted after the first build and rebuilt by the next one.
.SECONDARY: $(call obj,$(UNIT_SRC) $(TOOL_SRC) $(FUZZ_SRC)) \
            $(patsubst tests/fuzz/fuzz_%.c,$(BUILD)/tests/fuzz/replay-%.o,$(FUZZ_SRC))

FORMAT_FILES := $(ATPROTO_SRC) $(CACHE_SRC) $(APPVIEW_SRC) $(HOLD_SRC) $(UNIT_SRC) $(TOOL_SRC) \
                $(FUZZ_SRC) tests/fuzz/replay.c $(wildcard */*.h tests/*/*.h)

.PHONY: all bins fuzzers deps-build deps-run deps-test deps-bench test check-asan bench fuzz run \
        demo format format-check lint clean
# The packages first, and the build in a make of its own: pkg-config's flags above are read
# with this Makefile, before a package installed by this very make would exist.
all: deps-build
	@$(MAKE) --no-print-directory bins
	@if [ "$(SAN)" != 1 ]; then mkdir -p bin && ln -sf ../$(BIN)/appview bin/appview && ln -sf ../$(BIN)/hold bin/hold; fi

bins: $(BIN)/appview $(BIN)/hold $(UNIT_BIN) $(TOOL_BIN) $(FUZZ_REPLAY)
fuzzers: $(FUZZ_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -c $< -o $@

# Lua scripts for Valkey are compiled into the binary as C strings.
$(BUILD)/cache/lua_scripts.c: $(CACHE_LUA) tests/tools/embed.sh
	@mkdir -p $(dir $@)
	sh tests/tools/embed.sh $(CACHE_LUA) > $@
$(BUILD)/cache/lua_scripts.o: $(BUILD)/cache/lua_scripts.c
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -c $< -o $@

$(BUILD)/libatproto.a: $(ATPROTO_OBJ)
	@mkdir -p $(dir $@); rm -f $@; $(AR) rcs $@ $^
$(BUILD)/libcache.a: $(CACHE_OBJ)
	@mkdir -p $(dir $@); rm -f $@; $(AR) rcs $@ $^
# The service libraries hold everything but main(), so unit tests can link them.
$(BUILD)/libappview.a: $(filter-out $(BUILD)/appview/main.o,$(APPVIEW_OBJ))
	@mkdir -p $(dir $@); rm -f $@; $(AR) rcs $@ $^
$(BUILD)/libhold.a: $(filter-out $(BUILD)/hold/main.o,$(HOLD_OBJ))
	@mkdir -p $(dir $@); rm -f $@; $(AR) rcs $@ $^

$(BIN)/appview: $(BUILD)/appview/main.o $(BUILD)/libappview.a $(BUILD)/libcache.a $(BUILD)/libatproto.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BIN)/hold: $(BUILD)/hold/main.o $(BUILD)/libhold.a $(BUILD)/libatproto.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BIN)/unit/%: $(BUILD)/tests/unit/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIBS) $(LDLIBS) -o $@
$(BIN)/tools/%: $(BUILD)/tests/tools/%.o $(BUILD)/libatproto.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BIN)/unit/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/tests/fuzz/replay-%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(filter %.o,$^) $(LIBS) $(LDLIBS) -o $@
$(BUILD)/tests/fuzz/replay-%.o: tests/fuzz/replay.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -DFUZZ_NAME='"$*"' -c $< -o $@
$(BIN)/fuzz/%: $(BUILD)/tests/fuzz/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIBS) $(LDLIBS) -o $@
# Test tools that drive appview code (the resolver, the Jetstream client) link it too.
APPVIEW_TOOLS := $(BIN)/tools/resolve $(BIN)/tools/jetstream_tail $(BIN)/tools/fold_records
$(APPVIEW_TOOLS): $(BIN)/tools/%: $(BUILD)/tests/tools/%.o $(BUILD)/libappview.a $(BUILD)/libcache.a $(BUILD)/libatproto.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

deps-build:
	@sh tests/tools/install-deps.sh build
deps-run:
	@sh tests/tools/install-deps.sh run
deps-test:
	@sh tests/tools/install-deps.sh test
	@sh tests/tools/install-node.sh
deps-bench:
	@sh tests/tools/install-deps.sh bench

# Gated like Valkey's and curl's CI: a format difference or a lint warning fails the run.
# The builds use every core (nproc): CI's clock is the budget.
test: deps-test
	$(MAKE) format-check
	$(MAKE) lint
	$(MAKE) -j$(JOBS) all
	$(MAKE) -j$(JOBS) SAN=1 bins
	python3 tests/run.py --bin build-asan/bin

check-asan: test

bench: deps-bench
	$(MAKE) all
	sh bench/run.sh

# Runs every libFuzzer harness for FUZZ_SECONDS over its corpus (new inputs go to var/fuzz/,
# crashes to var/fuzz/artifacts/), then prints what each found.
fuzz:
	@sh tests/tools/install-deps.sh build clang libclang-rt-14-dev
	$(MAKE) FUZZ=1 fuzzers
	sh tests/fuzz/run.sh build-fuzz/bin/fuzz $(FUZZ_SECONDS)

run: deps-run
	@$(MAKE) --no-print-directory all
	sh deploy/run-local.sh

demo: deps-run
	@$(MAKE) --no-print-directory all
	sh deploy/demo.sh

format:
	@sh tests/tools/install-deps.sh tools clang-format
	clang-format -i $(FORMAT_FILES)

format-check:
	@sh tests/tools/install-deps.sh tools clang-format
	@clang-format --dry-run --Werror $(FORMAT_FILES) || \
	    { echo "format-check: run make format and commit the result" >&2; exit 1; }

lint:
	@sh tests/tools/install-deps.sh tools cppcheck clang-tidy
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	    --suppress=missingIncludeSystem -I. atproto cache appview hold
	@# one file per clang-tidy, two at a time (the machine's cores); any warning fails
	@printf '%s\n' $(ATPROTO_SRC) $(CACHE_SRC) $(APPVIEW_SRC) $(HOLD_SRC) | \
	    xargs -P 2 -I {} clang-tidy --quiet --warnings-as-errors='*' {} -- \
	    $(filter-out -MMD -MP,$(CPPFLAGS))

clean:
	rm -rf build build-asan build-fuzz bin

-include $(shell find build build-asan build-fuzz -name '*.d' 2>/dev/null)
