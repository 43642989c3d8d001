use which::which;

/// Rebuilds the programs when bpf-linker changes, because cargo cannot see
/// the linker as an input of the build.
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found in PATH; install it with \
         `cargo install bpf-linker` or run `cargo xtask run`, which sets up the host",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.to_str().unwrap());
}
