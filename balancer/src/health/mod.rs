//! Backend health: the [`Health`] snapshot published with each [`BackendSet`](crate::BackendSet),
//! the active-check state machine that produces it ([`active`]), and per-core passive ejection
//! after consecutive failures ([`passive`]).

pub mod active;
pub mod passive;

/// One up/down flag per backend of a [`BackendSet`](crate::BackendSet), indexed like its backends.
///
/// Produced by the control plane's active checks ([`ActiveHealth::snapshot`](crate::ActiveHealth::snapshot))
/// and published inside a snapshot; request cores only read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    up: Box<[bool]>,
    /// Whether every flag is up, so a pick can skip the per-backend check.
    all_up: bool,
}

impl Health {
    /// `n` backends, all up.
    pub fn all_up(n: usize) -> Self {
        Self {
            up: vec![true; n].into(),
            all_up: true,
        }
    }

    /// One flag per backend, `true` meaning up.
    pub fn from_flags(flags: impl Into<Box<[bool]>>) -> Self {
        let up: Box<[bool]> = flags.into();
        let all_up = up.iter().all(|u| *u);
        Self { up, all_up }
    }

    /// Whether backend `index` is up; `false` for an index out of range.
    #[inline]
    pub fn is_up(&self, index: usize) -> bool {
        self.up.get(index).copied().unwrap_or(false)
    }

    /// Whether every backend is up.
    #[inline]
    pub fn is_all_up(&self) -> bool {
        self.all_up
    }

    /// How many flags there are.
    pub fn len(&self) -> usize {
        self.up.len()
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.up.is_empty()
    }

    /// How many backends are up.
    pub fn up_count(&self) -> usize {
        self.up.iter().filter(|u| **u).count()
    }
}
