//! The `#[service]` and `#[workflow]` attribute macros of infinitic. Use them through the
//! `infinitic` crate, which re-exports them with their documentation.
//!
//! Errors are spanned on the user's tokens and accumulated (all at once); on error the user's
//! item is still emitted so the rest of the crate and IDE completion keep working.

mod attr;
mod channels;
mod determinism;
mod errors;
mod service;
mod signature;
mod workflow;

use proc_macro::TokenStream;

/// See `infinitic::service`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::expand(attr.into(), item.into()).into()
}

/// See `infinitic::workflow`.
#[proc_macro_attribute]
pub fn workflow(attr: TokenStream, item: TokenStream) -> TokenStream {
    workflow::expand(attr.into(), item.into()).into()
}
