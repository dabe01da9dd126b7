//! `gwsync store copy`: moves everything from a stopped store into an empty one.
