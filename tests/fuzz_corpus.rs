//! Replays every committed fuzz input (`fuzz/corpus/<target>/`) and every crash the fuzzers
//! found (`fuzz/artifacts/<target>/`, kept as regressions) through the same invariants the
//! `cargo fuzz` targets check, on the stable toolchain: `make test` runs this; `make fuzz`
//! grows the corpus.

use std::path::Path;

use cloudwatch_publisher::fuzzing::TARGETS;

#[test]
fn every_committed_fuzz_input_keeps_its_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (name, run) in TARGETS {
        let mut inputs = 0;
        for folder in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(folder).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a corpus entry").path();
                if !path.is_file() || path.file_name().is_some_and(|n| n == ".gitkeep") {
                    continue;
                }
                let data = std::fs::read(&path).expect("a corpus file");
                let result = std::panic::catch_unwind(|| run(&data));
                assert!(
                    result.is_ok(),
                    "{name}: {} breaks an invariant",
                    path.display()
                );
                inputs += 1;
            }
        }
        assert!(
            inputs > 0,
            "fuzz/corpus/{name} is empty: seed it (make fuzz)"
        );
        replayed += inputs;
    }
    println!("replayed {replayed} fuzz inputs");
}
