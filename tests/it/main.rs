//! drover's end-to-end tests: one integration binary, one module per concern.

/// Repository-wide style rules (module docs).
mod tidy;
