//! Seeds: where a run's randomness comes from, and how a failing run tells
//! which seed to replay.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// The environment variable that pins the seed(s) of every simulated test:
/// one number, or several separated by commas.
pub const SEED_ENV: &str = "TRYST_SIM_SEED";

/// The stack of a simulated run's thread.
pub const STACK_SIZE: usize = 256 << 20;

/// The seeds every scenario runs on when [`SEED_ENV`] is not set.
pub const DEFAULT_SEEDS: [u64; 4] = [1, 2, 3, 0x5eed_cafe];

/// The seeds to run: those of [`SEED_ENV`] if set (and valid), else `default`.
pub fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var(SEED_ENV) {
        Ok(text) => {
            let parsed: Vec<u64> = text
                .split(',')
                .filter_map(|s| s.trim().parse::<u64>().ok())
                .collect();
            if parsed.is_empty() {
                default.to_vec()
            } else {
                parsed
            }
        }
        Err(_) => default.to_vec(),
    }
}

/// Runs `test` once per seed (see [`seeds`]); if it panics, prints
/// `seed = N` (and how to replay it) and resumes the panic.
pub fn run_with_seeds(default: &[u64], test: impl Fn(u64) + Sync) {
    for seed in seeds(default) {
        run_with_seed(seed, &test);
    }
}

/// Runs `test(seed)` on a thread with a large stack (an endpoint terminal
/// holds its peer session slots inline, and unoptimised builds copy it
/// between frames); on panic prints the seed and resumes the panic.
pub fn run_with_seed(seed: u64, test: impl FnOnce(u64) + Send) {
    let result = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(STACK_SIZE)
            .spawn_scoped(s, move || catch_unwind(AssertUnwindSafe(|| test(seed))))
            .expect("spawn a test thread")
            .join()
            .unwrap_or_else(Err)
    });
    if let Err(panic) = result {
        eprintln!("seed = {seed}  (replay with {SEED_ENV}={seed})");
        resume_unwind(panic);
    }
}
