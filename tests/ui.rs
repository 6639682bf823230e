//! Compile-time tests of `#[service]` and `#[workflow]`: every supported signature shape
//! compiles and runs (`tests/ui/pass`), and every rejected one fails with exactly one error,
//! on the user's token, that names the fix (`tests/ui/fail/*.stderr`).
//!
//! After changing a macro's messages, regenerate with `TRYBUILD=overwrite cargo test --test ui`
//! and review every changed `.stderr` as documentation.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
