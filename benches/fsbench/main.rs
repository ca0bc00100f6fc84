//! `cargo bench --bench fsbench -- [OPTIONS]`: see `benches/README.md`.

#[path = "mod.rs"]
mod fsbench;

fn main() {
    if let Err(e) = fsbench::interrupt::install() {
        eprintln!("fsbench: {e}");
        std::process::exit(1);
    }
    match fsbench::run(std::env::args_os()) {
        Ok(_) => {}
        Err(e) => {
            eprintln!("fsbench: {e}");
            std::process::exit(1);
        }
    }
}
