//! The resources and the association rules (RULES.md R01-R30), as pure functions over the
//! state: no I/O here. A request runs inside a [`Txn`]; if any rule refuses, the
//! transaction rolls back and nothing changes (R29).

mod describe;
mod ops;
mod refusal;
mod request;
mod resources;
mod state;
mod txn;

#[cfg(test)]
pub(crate) mod tests;

pub use describe::describe;
pub use ops::{Egress, EgressLookup, Executed, egress_of, execute};
pub use refusal::{Refusal, codes};
pub use request::Request;
pub use resources::*;
pub use state::State;
pub use txn::{Change, Changed, ResourceRef, Txn};

impl State {
    /// Runs one request as its own transaction: `Ok` with what changed, or the refusal and
    /// the state exactly as before.
    pub fn run(&mut self, request: &Request) -> Result<(Executed, Change), Refusal> {
        self.run_all(std::slice::from_ref(request))
            .map(|(mut done, change)| (done.pop().unwrap_or_default(), change))
    }

    /// Puts back what a committed change replaced (used when the store could not write it).
    pub fn revert(&mut self, change: &Change) {
        for changed in &change.eips {
            self.restore_eip(changed.key, changed.before.as_deref().cloned());
        }
        for changed in &change.others {
            self.restore(&changed.key, changed.before.as_deref().cloned());
        }
    }

    /// Runs several requests as one transaction (`eipctl apply`): all or nothing.
    pub fn run_all(&mut self, requests: &[Request]) -> Result<(Vec<Executed>, Change), Refusal> {
        let mut executed = Vec::with_capacity(requests.len());
        let change = self.run_each(requests, |_| {}, |done| executed.push(done))?;
        Ok((executed, change))
    }

    /// [`State::run_all`] for a document: telling `progress` how many requests are done now
    /// and then, and keeping of what each did only its warnings (a million requests' would
    /// take 100 MB).
    pub fn run_all_observed(
        &mut self,
        requests: &[Request],
        progress: impl FnMut(usize),
    ) -> Result<(Vec<String>, Change), Refusal> {
        let mut warnings = Vec::new();
        let change = self.run_each(requests, progress, |done| warnings.extend(done.warnings))?;
        Ok((warnings, change))
    }

    /// Runs `requests` as one transaction, handing what each did to `done`.
    fn run_each(
        &mut self,
        requests: &[Request],
        mut progress: impl FnMut(usize),
        mut done: impl FnMut(Executed),
    ) -> Result<Change, Refusal> {
        const EVERY: usize = 1000;
        let mut txn = Txn::begin(self);
        for (i, request) in requests.iter().enumerate() {
            if i % EVERY == 0 {
                progress(i);
            }
            match execute(&mut txn, request) {
                Ok(executed) => done(executed),
                Err(mut refusal) => {
                    txn.rollback();
                    if requests.len() > 1 {
                        refusal.message =
                            format!("request {} of {}: {}", i + 1, requests.len(), refusal.message);
                    }
                    return Err(refusal);
                }
            }
        }
        Ok(txn.commit())
    }
}
