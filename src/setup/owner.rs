//! Who gets the files setup writes, from the installation it acts on
//! ([`Target`](crate::target::Target)).

use super::write::Owner;
use crate::target::Target;

/// Who gets the files setup writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerRule {
    /// Not root: files are created as the invoking user, nothing is chowned.
    Invoker,
    /// Root writing for the service: its user and group.
    Service(Owner),
    /// Root with an installation that is not the service's: the state directory's owner.
    StateDirOwner,
}

impl OwnerRule {
    pub fn of(target: &Target) -> Self {
        match (&target.service, target.root) {
            (_, false) => Self::Invoker,
            (Some(user), true) => Self::Service(Owner {
                uid: user.uid,
                gid: user.gid,
            }),
            (None, true) => Self::StateDirOwner,
        }
    }
}
