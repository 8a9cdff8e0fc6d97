//! Unit tests. The file store's run everywhere; the keyring ones (`keyrings`) need a real
//! keyring and run through `tests/run-keyring-tests.sh`.

mod basics;
mod crash;
mod file_store;
mod hardware;
mod keyrings;
mod support;
