#![no_std]
// This library target exists so that the daemon can list this crate as a
// build dependency; the programs live in the binary target.
