//! Shared helpers for the cross-check tests.
