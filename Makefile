# containerd-shim-rs: build, install, demo, test, lint, bench.
# The e2e tests and the demo need root (they start a private containerd).

CARGO   ?= cargo
PREFIX  ?= /usr/local
BIN     := containerd-shim-rs-v1
SHIM    ?= target/release/$(BIN)
RUNTIME ?= io.containerd.rs.v1
IMAGE   := localhost/shim-rs/busybox:latest
HARNESS := tests/harness/containerd.sh
DEMO_DIR := $(CURDIR)/.work/demo

# The e2e matrix: these tests also run against each of these containerd versions
# (fetched from Debian by tests/harness/containerd-versions.sh into .work/containerd);
# the plain `cargo test` covers the system containerd.
CONTAINERD_VERSIONS ?= 1.7.24 2.1.9
MATRIX_TESTS ?= --test e2e_lifecycle --test e2e_exec --test e2e_stdio
VERSIONS_SCRIPT := tests/harness/containerd-versions.sh

.PHONY: all deps ensure-demo-deps ensure-test-deps build install demo demo-run test test-matrix test-cri-matrix test-systemd test-cgroupv2 containerd-versions lint bench bench-bins bench-cgroupv2 clean fuzz deb test-deb static test-static

all: build

# Debian/Ubuntu packages the demo, tests and benchmarks need (run as root). The Rust
# toolchain (cargo, rustfmt, clippy) comes from rustup.
DEB_PACKAGES := containerd runc busybox-static hyperfine strace jq libseccomp-dev pkg-config make \
	containernetworking-plugins protobuf-compiler gcc libc6-dev \
	qemu-system-x86 cpio
# What the demo needs: containerd and runc (the baseline), the busybox image's source, and
# the build (libseccomp, pkg-config, a C toolchain).
DEMO_PACKAGES := containerd runc busybox-static libseccomp-dev pkg-config gcc libc6-dev
deps:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(DEB_PACKAGES)

# Installs only what is missing (nothing when all is there) and checks for cargo.
ensure-demo-deps:
	@CARGO="$(CARGO)" bash tests/harness/ensure-deps.sh $(DEMO_PACKAGES)
ensure-test-deps:
	@CARGO="$(CARGO)" bash tests/harness/ensure-deps.sh $(DEB_PACKAGES)

# $(call check_not_pie,BINARY): fails when BINARY is position-independent (see build.rs).
check_not_pie = @readelf -h "$(1)" | grep -q 'Type:.*EXEC' || { echo "$(1) is position-independent (see build.rs)" >&2; exit 1; }

build:
	$(CARGO) build --release
	$(call check_not_pie,$(SHIM))

# A Debian package of the release binary (packaging/build-deb.sh, dpkg-deb), into target/deb.
DEB_DIR := target/deb
deb: build
	bash packaging/build-deb.sh "$(SHIM)" "$(DEB_DIR)"

# Installs the package system-wide and runs a container with it through a containerd that
# finds the shim as a system containerd does; removes it again. For CI's fresh machine.
test-deb: build
	@deb="$$(bash packaging/build-deb.sh "$(SHIM)" "$(DEB_DIR)")" && bash packaging/test-deb.sh "$$deb"

# One binary for every other distribution: glibc and libseccomp linked statically (Debian's
# libseccomp.a from libseccomp-dev). The shim does no NSS lookups (users and groups come from
# the container's own /etc/passwd and /etc/group), which static glibc could not do.
# Not position-independent, as the dynamic build (see build.rs): -C relocation-model=static
# also compiles the code for a fixed address.
STATIC_TARGET ?= $(shell rustc -vV | sed -n 's/^host: //p')
STATIC_SHIM := target/$(STATIC_TARGET)/release/$(BIN)
static:
	LIBSECCOMP_LINK_TYPE=static \
	LIBSECCOMP_LIB_PATH="$$(dirname "$$(find /usr/lib /usr/lib64 -name libseccomp.a 2>/dev/null | head -n 1)")" \
	RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
		$(CARGO) build --release --target $(STATIC_TARGET) --bin $(BIN)
	@! readelf -d "$(STATIC_SHIM)" | grep -q NEEDED || { echo "$(STATIC_SHIM) needs shared libraries" >&2; exit 1; }
	$(call check_not_pie,$(STATIC_SHIM))

# The static binary through the lifecycle and exec suites (the harness installs it in place
# of the one cargo built).
test-static: static
	SHIM_RS_SHIM_BIN="$(CURDIR)/$(STATIC_SHIM)" $(CARGO) test --test e2e_lifecycle --test e2e_exec

# No dependency on build: `sudo make install` after `make build` must not need cargo as root.
install:
	@test -x "$(SHIM)" || { echo "$(SHIM) missing: run 'make build' first" >&2; exit 1; }
	install -D -m 0755 "$(SHIM)" "$(DESTDIR)$(PREFIX)/bin/$(BIN)"

demo: ensure-demo-deps
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory demo-run

# The demo without the build step (RUNTIME and SHIM can be overridden).
# Always stops the private containerd, also on failure.
demo-run:
	@set -eu; \
	dir="$(DEMO_DIR)"; ns="demo-$$$$"; id="demo-$$$$"; \
	test -x "$(SHIM)" || { echo "demo: $(SHIM) missing" >&2; exit 1; }; \
	"$(HARNESS)" stop "$$dir"; \
	trap '"$(HARNESS)" stop "$$dir"' EXIT; \
	mkdir -p "$$dir/bin"; \
	cp "$(SHIM)" "$$dir/bin/$(BIN)"; \
	echo "demo: private containerd in $$dir, namespace $$ns"; \
	CONTAINERD_NAMESPACE="$$ns" "$(HARNESS)" start "$$dir" "$$dir/bin"; \
	echo "demo: ctr run --rm --runtime $(RUNTIME) $(IMAGE) $$id echo hello"; \
	out="$$(timeout -s KILL 60 "$(HARNESS)" ctr "$$dir" -n "$$ns" \
		run --rm --runtime "$(RUNTIME)" "$(IMAGE)" "$$id" echo hello)" || { \
		rc=$$?; echo "demo: ctr run failed ($$rc): $$out" >&2; \
		tail -n 20 "$$dir/containerd.log" >&2; exit 1; }; \
	echo "$$out"; \
	test "$$out" = hello || { echo "demo: expected 'hello', got '$$out'" >&2; exit 1; }; \
	echo "demo: OK"

# Unit tests and the e2e tests (tests/e2e_*.rs; those need root and fail, not skip, without it),
# then the e2e matrix over the other containerd versions, then the cgroup v2 VM.
test: ensure-test-deps
	@if [ "$$(id -u)" != 0 ]; then echo "note: the e2e tests need root; they will fail as $$(id -un)" >&2; fi
	$(CARGO) test --workspace
	@$(MAKE) --no-print-directory test-matrix
	@$(MAKE) --no-print-directory test-cri-matrix
	@$(MAKE) --no-print-directory test-cgroupv2

# The same e2e test binaries once per containerd version (SHIM_RS_CONTAINERD picks it).
test-matrix: containerd-versions
	@set -e; for v in $(CONTAINERD_VERSIONS); do \
		echo "=== e2e against containerd $$v: cargo test $(MATRIX_TESTS)"; \
		SHIM_RS_CONTAINERD=$$v $(CARGO) test $(MATRIX_TESTS); \
	done

# The CRI suite (Kubernetes through containerd's CRI plugin, handlers rs and runc) once per
# containerd line; `cargo test` covers the system containerd (1.6). containerd.sh writes each
# line's own CRI config (version 2 for 1.x, version 3 with the split CRI plugins for 2.x).
CRI_CONTAINERD_VERSIONS ?= 1.7.24 2.1.9
.PHONY: test-cri-matrix
test-cri-matrix:
	bash $(VERSIONS_SCRIPT) fetch $(CRI_CONTAINERD_VERSIONS)
	@set -e; for v in $(CRI_CONTAINERD_VERSIONS); do \
		echo "=== CRI e2e against containerd $$v: cargo test --test e2e_cri"; \
		SHIM_RS_CONTAINERD=$$v $(CARGO) test --test e2e_cri; \
	done
# The cgroup-related e2e suites on a cgroup-v2-only host: Debian's current kernel under qemu
# (tests/vm; the kernel and initramfs are cached in .work/vm), for rs and runc.v2 under the same
# assertions, plain and with systemd as PID 1. Fails on a failing test, a leftover or a VM that
# does not boot. Needs qemu-system-x86 and cpio (make deps). See tests/harness/NOTES.md.
test-cgroupv2:
	CARGO="$(CARGO)" bash tests/vm/suites.sh
# Only the systemd cgroup driver's suites (tests/e2e_systemd.rs, e2e_cri's cri_systemd_*), for
# rs and runc.v2, in the VM with systemd as PID 1 (they skip on hosts without it).
test-systemd:
	SHIM_RS_VM_PLAN= SHIM_RS_VM_SUITES="e2e_systemd e2e_cri" CARGO="$(CARGO)" bash tests/vm/suites.sh

# Downloads (once) and unpacks the containerd versions of the matrix.
containerd-versions:
	bash $(VERSIONS_SCRIPT) fetch $(CONTAINERD_VERSIONS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# libFuzzer (cargo-fuzz, stable toolchain, no sanitizer), each target bounded in time; a
# crash fails the target and leaves the input in fuzz/artifacts. What the shim parses:
# config.json and its plan (spec_plan), the runtime options of Create (runtime_options), the
# launcher's and the inits' channel messages (launch_channel), the state file (state_file),
# ttrpc frames and task API requests as the daemon reads them (ttrpc_request).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= spec_plan runtime_options launch_channel state_file ttrpc_request
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@set -e; cd fuzz; for t in $(FUZZ_TARGETS); do \
		echo "=== cargo fuzz run $$t ($(FUZZ_SECONDS) s)"; \
		$(CARGO) fuzz run $$t --sanitizer none -- -max_total_time=$(FUZZ_SECONDS); \
	done

# Our dynamic and static binaries side by side with runc.v2; the static one is installed as
# containerd-shim-rsstatic-v1, the runtime io.containerd.rsstatic.v1 (containerd derives the
# binary's name from the runtime type).
# The Kubernetes rows use the CRI client examples/cri_bench.rs (built from the dev-dependencies).
BENCH_BIN_DIR := $(CURDIR)/.work/bench-bin
CRI_BENCH := target/release/examples/cri_bench
BENCH_RUNTIME_TYPES := io.containerd.runc.v2 io.containerd.rs.v1 io.containerd.rsstatic.v1
bench-bins: build static
	@test -f tests/bench.sh || { echo "tests/bench.sh missing" >&2; exit 1; }
	$(CARGO) build --release --example cri_bench
	mkdir -p "$(BENCH_BIN_DIR)"
	cp "$(SHIM)" "$(BENCH_BIN_DIR)/$(BIN)"
	cp "$(STATIC_SHIM)" "$(BENCH_BIN_DIR)/containerd-shim-rsstatic-v1"

bench: bench-bins
	BENCH_BINDIR="$(BENCH_BIN_DIR)" BENCH_CRI_BIN="$(CURDIR)/$(CRI_BENCH)" \
	BENCH_RUNTIMES="$${BENCH_RUNTIMES:-$(BENCH_RUNTIME_TYPES)}" \
		bash tests/bench.sh $(BENCH_ARGS)

# The same benchmark on the cgroup v2-only VM (tests/vm/run.sh), where the init and execs are
# born in their cgroup. The VM emulates its CPU (TCG, tens of times slower than this machine),
# so it runs few of each: read its ratios, not its milliseconds. Results in .work/bench-v2/.
BENCH_V2_COUNTS ?= BENCH_RUNS=6 BENCH_ROUNDS=2 BENCH_WARMUP=1 BENCH_MEM_CONTAINERS=3 \
	BENCH_BURST_COUNT=0 BENCH_EXEC_BURST=20 BENCH_EXEC_PAR=5 BENCH_BURST_RUNS=1 \
	BENCH_CRI_RUNS=3 BENCH_EXECSYNC_CALLS=10 BENCH_CRI_PODS=1 BENCH_TIMEOUT=3000
bench-cgroupv2: bench-bins
	tests/vm/run.sh "$(CURDIR)" env $(BENCH_V2_COUNTS) BENCH_OUT="$(CURDIR)/.work/bench-v2" \
		BENCH_BINDIR="$(BENCH_BIN_DIR)" BENCH_CRI_BIN="$(CURDIR)/$(CRI_BENCH)" \
		BENCH_RUNTIMES="$(BENCH_RUNTIME_TYPES)" bash tests/bench.sh

# Removes only what this Makefile and the harness made under .work (another
# tool's live environment there is left alone).
clean:
	-@"$(HARNESS)" stop "$(DEMO_DIR)"
	$(CARGO) clean
	rm -rf --one-file-system .work/image .work/demo .work/containerd .work/vm
