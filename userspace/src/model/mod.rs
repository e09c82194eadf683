//! The resources and the association rules (RULES.md R01-R30), as pure functions over the
//! state: no I/O here. A request runs inside a [`Txn`]; if any rule refuses, the
//! transaction rolls back and nothing changes (R29).

use std::borrow::Borrow;

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
        // EIPs last first, as an undo goes: a pool the change allocated in rising order
        // then leaves the end of the state's sorted list, and of the indexes' (see
        // `RisingMap::remove`).
        for changed in change.eips.iter().rev() {
            self.restore_eip(changed.key, changed.before.as_deref().cloned());
        }
        for changed in &change.others {
            self.restore(&changed.key, changed.before.as_deref().cloned());
        }
    }

    /// Runs several requests as one transaction (`eipctl apply`): all or nothing.
    pub fn run_all(&mut self, requests: &[Request]) -> Result<(Vec<Executed>, Change), Refusal> {
        let mut executed = Vec::with_capacity(requests.len());
        match self.run_each(requests, |_| {}, |done| executed.push(done)) {
            Ok(txn) => Ok((executed, txn.commit())),
            Err((at, refusal)) => Err(refusal.of_request(at, requests.len())),
        }
    }

    /// Runs `requests` one after another in one transaction, handing what each did to
    /// `done` and telling `progress` how many are done now and then. Hands the transaction
    /// back open, for the caller to commit or roll back: a document being read while it
    /// runs is kept only if the rest of it reads well. A refusal rolls everything back and
    /// says which request (from 0) it was.
    pub fn run_each<R: Borrow<Request>>(
        &mut self,
        requests: impl IntoIterator<Item = R>,
        mut progress: impl FnMut(usize),
        mut done: impl FnMut(Executed),
    ) -> Result<Txn<'_>, (usize, Refusal)> {
        const EVERY: usize = 1000;
        let mut txn = Txn::begin(self);
        for (i, request) in requests.into_iter().enumerate() {
            if i % EVERY == 0 {
                progress(i);
            }
            match execute(&mut txn, request.borrow()) {
                Ok(executed) => done(executed),
                Err(refusal) => {
                    txn.rollback();
                    return Err((i, refusal));
                }
            }
        }
        Ok(txn)
    }
}
