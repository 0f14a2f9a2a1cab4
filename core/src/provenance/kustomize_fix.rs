//! Source fixes for Kustomize roots: the origin resource, the patch that sets the value, or a
//! new patch in the overlay. Proposes nothing yet; the shell's confirmation loop already
//! dispatches here, so a planner written in this function is confirmed like the Helm one.

use super::fix::{PlanInput, Proposals};

pub fn plan(_input: &PlanInput) -> Proposals {
    Proposals::default()
}
