//! GPU backend (placeholder).
