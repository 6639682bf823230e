//! The macros' own arguments: `#[service(name = "...")]`, `#[workflow(name = "...")]`.

use crate::errors::Errors;
use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::{punctuated::Punctuated, Expr, ExprLit, Lit, LitStr, Meta, Token};

/// Parsed macro arguments.
#[derive(Default)]
pub(crate) struct MacroArgs {
    /// The name override, if any.
    pub(crate) name: Option<LitStr>,
}

pub(crate) fn parse(macro_name: &str, attr: TokenStream, errors: &mut Errors) -> MacroArgs {
    let mut args = MacroArgs::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr) {
        Ok(metas) => metas,
        Err(e) => {
            errors.push(e);
            return args;
        }
    };
    for meta in metas {
        match &meta {
            Meta::NameValue(nv) if nv.path.is_ident("name") => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(name),
                    ..
                }) if !name.value().trim().is_empty() => args.name = Some(name.clone()),
                other => errors.spanned(
                    other,
                    format!("expected a non-empty string: #[{macro_name}(name = \"NewName\")]"),
                ),
            },
            _ => errors.spanned(
                meta.path(),
                format!(
                    "unknown argument; #[{macro_name}] takes only `name = \"...\"` (the name \
                     under which it is registered, kept stable across renames)"
                ),
            ),
        }
    }
    args
}
