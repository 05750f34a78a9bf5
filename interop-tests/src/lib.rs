//! Helpers for the interop tests live in tests/common.
