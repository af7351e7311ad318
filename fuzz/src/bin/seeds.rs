//! Writes the seed inputs into `corpus/<target>`: `cargo run --bin seeds` (from `fuzz/`).

use std::path::Path;

use bevy_peersync::fuzzing::{decode_seeds, receive_seeds};

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in [("receive", receive_seeds()), ("decode", decode_seeds())] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed)?;
        }
    }
    println!("wrote the seeds into {}", root.display());
    Ok(())
}
