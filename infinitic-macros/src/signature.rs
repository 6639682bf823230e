//! Reading and checking the methods of a `#[service]` or `#[workflow]` trait, and rewriting
//! `async fn` into `fn -> impl Future + Send` so implementations can run on any worker thread.

use crate::errors::Errors;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{
    parse_quote, FnArg, GenericArgument, Ident, ItemTrait, Pat, PathArguments, ReturnType,
    TraitBoundModifier, TraitItem, TraitItemFn, Type, TypeParamBound,
};

/// What the generators need to know about one method.
pub(crate) struct Method {
    pub(crate) ident: Ident,
    pub(crate) docs: Vec<syn::Attribute>,
    /// Parameter names for the stub (the user's, when they are plain identifiers).
    pub(crate) arg_names: Vec<Ident>,
    pub(crate) arg_types: Vec<Type>,
    /// The declared return type (`()` when omitted).
    pub(crate) output: Type,
}

impl Method {
    /// `Result<T, E>` splits into `(T, E)`: the stub yields `T` or a typed failure carrying `E`.
    pub(crate) fn fallible(&self) -> Option<(&Type, &Type)> {
        match type_arguments(&self.output, "Result")?.as_slice() {
            [ok, err] => Some((ok, err)),
            _ => None,
        }
    }

    pub(crate) fn name(&self) -> String {
        self.ident.to_string()
    }
}

/// The type arguments of `ty` when it is a path ending in `name` (`Result<T, E>` gives
/// `[T, E]`); `None` for any other type.
pub(crate) fn type_arguments<'t>(ty: &'t Type, name: &str) -> Option<Vec<&'t Type>> {
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args
        .iter()
        .map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// Checks every item of the trait (all problems at once) and returns its methods.
pub(crate) fn read_methods(item: &ItemTrait, kind: &str, errors: &mut Errors) -> Vec<Method> {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.spanned(
            &item.generics,
            format!("a #[{kind}] trait cannot be generic: its methods are called by name with encoded arguments, so every type must be concrete"),
        );
    }
    for bound in &item.supertraits {
        if !is_marker_bound(bound) {
            errors.spanned(
                bound,
                format!(
                    "a #[{kind}] trait cannot have a supertrait other than `Send`, `Sync` or \
                     `'static` (added anyway): the macro cannot see the methods of `{}`, so \
                     they would be missing from the generated stub; declare them in this trait, \
                     or in a #[{kind}] trait of their own",
                    quote!(#bound).to_string().replace(' ', "")
                ),
            );
        }
    }
    let mut methods = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(f) => {
                if let Some(m) = read_method(f, kind, errors) {
                    methods.push(m);
                }
            }
            other => errors.spanned(
                other,
                format!("a #[{kind}] trait may only contain `async fn` methods"),
            ),
        }
    }
    methods
}

/// `Send`, `Sync` (by any path) or `'static`: the bounds the macro adds itself.
fn is_marker_bound(bound: &TypeParamBound) -> bool {
    match bound {
        TypeParamBound::Lifetime(lifetime) => lifetime.ident == "static",
        TypeParamBound::Trait(t) => {
            matches!(t.modifier, TraitBoundModifier::None)
                && t.lifetimes.is_none()
                && t.path.segments.last().is_some_and(|last| {
                    (last.ident == "Send" || last.ident == "Sync")
                        && matches!(last.arguments, PathArguments::None)
                })
        }
        _ => false,
    }
}

fn read_method(f: &TraitItemFn, kind: &str, errors: &mut Errors) -> Option<Method> {
    let sig = &f.sig;
    let mut problems = Errors::default();
    if sig.asyncness.is_none() {
        problems.spanned(
            sig.fn_token,
            format!(
                "#[{kind}] methods must be `async fn`: every call is awaited as a durable step"
            ),
        );
    }
    if let Some(c) = &sig.constness {
        problems.spanned(c, format!("#[{kind}] methods cannot be `const`"));
    }
    if let Some(u) = &sig.unsafety {
        problems.spanned(u, format!("#[{kind}] methods cannot be `unsafe`"));
    }
    if let Some(abi) = &sig.abi {
        problems.spanned(abi, format!("#[{kind}] methods cannot declare an ABI"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        problems.spanned(
            &sig.generics,
            "generic methods cannot be called remotely: a call carries only the method name and encoded arguments, so give every parameter a concrete type",
        );
    }
    if let Some(v) = &sig.variadic {
        problems.spanned(v, format!("#[{kind}] methods cannot be variadic"));
    }

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) => {
            if r.reference.is_none() {
                problems.spanned(
                    r,
                    "take `&self`: one implementation value serves every call",
                );
            } else if let Some(m) = &r.mutability {
                problems.spanned(
                    m,
                    "take `&self`, not `&mut self`: calls may run concurrently; keep mutable state behind a lock or in a database",
                );
            } else if r.colon_token.is_some() {
                problems.spanned(r, "take plain `&self`");
            }
        }
        _ => problems.push(syn::Error::new(
            sig.paren_token.span.join(),
            format!("#[{kind}] methods take `&self` as their first parameter"),
        )),
    }

    let mut arg_names = Vec::new();
    let mut arg_types = Vec::new();
    for (index, input) in inputs.enumerate() {
        let FnArg::Typed(typed) = input else {
            continue;
        };
        check_owned(&typed.ty, &mut problems);
        let name = match &*typed.pat {
            Pat::Ident(p) if p.subpat.is_none() => p.ident.clone(),
            _ => format_ident!("arg{}", index),
        };
        arg_names.push(name);
        arg_types.push((*typed.ty).clone());
    }

    let output: Type = match &sig.output {
        ReturnType::Default => parse_quote!(()),
        ReturnType::Type(_, ty) => {
            check_owned(ty, &mut problems);
            (**ty).clone()
        }
    };
    let ok = problems.is_empty();
    errors_merge(errors, problems);
    ok.then(|| Method {
        ident: sig.ident.clone(),
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        arg_names,
        arg_types,
        output,
    })
}

fn errors_merge(into: &mut Errors, from: Errors) {
    if let Some(e) = from.into_inner() {
        into.push(e);
    }
}

/// Arguments and results travel as messages: they must be owned, concrete types, all the way
/// down (`Vec<&str>` is rejected on the `&str`). A trait object is rejected only at the top:
/// `Box<dyn Trait>` can be serializable (with `typetag`, say), so that is left to the
/// `Serialize`/`Deserialize` assertion.
fn check_owned(ty: &Type, problems: &mut Errors) {
    match ty {
        Type::TraitObject(t) => problems.spanned(
            t,
            "trait objects cannot be sent as messages: use a concrete type (an enum for alternatives)",
        ),
        _ => check_owned_parts(ty, problems),
    }
}

fn check_owned_parts(ty: &Type, problems: &mut Errors) {
    match ty {
        Type::Reference(r) => problems.spanned(
            r,
            "arguments and results are sent as messages and must be owned: use `String` for `&str`, `Vec<T>` for `&[T]`, `T` for `&T`",
        ),
        Type::ImplTrait(t) => problems.spanned(
            t,
            "`impl Trait` cannot be sent as a message: use a concrete type that implements Serialize and Deserialize",
        ),
        Type::Ptr(p) => problems.spanned(p, "raw pointers cannot be sent as messages"),
        Type::Paren(p) => check_owned(&p.elem, problems),
        Type::Group(g) => check_owned(&g.elem, problems),
        Type::Array(a) => check_owned_parts(&a.elem, problems),
        Type::Slice(s) => check_owned_parts(&s.elem, problems),
        Type::Tuple(t) => t
            .elems
            .iter()
            .for_each(|elem| check_owned_parts(elem, problems)),
        Type::Path(p) => {
            if let Some(qself) = &p.qself {
                check_owned_parts(&qself.ty, problems);
            }
            for segment in &p.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        if let GenericArgument::Type(t) = arg {
                            check_owned_parts(t, problems);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The trait as emitted: `async fn m(&self, ..) -> R` becomes
/// `fn m(&self, ..) -> impl Future<Output = R> + Send`, and the trait gains `Send + Sync +
/// 'static` so one implementation value can serve calls from any worker thread.
pub(crate) fn rewrite_trait(item: &ItemTrait) -> ItemTrait {
    let mut item = item.clone();
    item.supertraits.push(parse_quote!(::core::marker::Send));
    item.supertraits.push(parse_quote!(::core::marker::Sync));
    item.supertraits.push(parse_quote!('static));
    if item.colon_token.is_none() {
        item.colon_token = Some(Default::default());
    }
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            continue;
        };
        if f.sig.asyncness.take().is_none() {
            continue;
        }
        let output = match &f.sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, ty) => quote!(#ty),
        };
        f.sig.output = parse_quote!(
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
        );
        if let Some(body) = f.default.take() {
            f.default = Some(parse_quote!({ async move #body }));
        }
    }
    item
}

/// `quote_spanned!` assertions that each argument and the result can travel as a message,
/// so a missing `Serialize`/`Deserialize` is reported on the user's type.
pub(crate) fn assert_message_types(methods: &[Method]) -> TokenStream {
    let checks = methods.iter().flat_map(|m| {
        // Argument types are checked by the argument codec (see `args_codec`).
        std::iter::once(&m.output).map(|ty| {
            let span = syn::spanned::Spanned::span(ty);
            quote::quote_spanned!(span=> ::infinitic::__private::assert_message::<#ty>();)
        })
    });
    // A service error is also rendered with `Debug` in failure reports: say so at its type.
    let errors = methods
        .iter()
        .filter_map(|m| m.fallible())
        .map(|(_, error)| {
            let span = syn::spanned::Spanned::span(error);
            quote::quote_spanned!(span=> ::infinitic::__private::assert_error::<#error>();)
        });
    quote! {
        const _: fn() = || { #(#checks)* #(#errors)* };
    }
}

/// A stub method: same name, parameters and docs as the trait's, returning the call value
/// `returns` built by `constructor(Self::NAME, "method", &(args,))`.
pub(crate) fn stub_method(
    m: &Method,
    returns: TokenStream,
    constructor: TokenStream,
) -> TokenStream {
    let ident = &m.ident;
    let docs = &m.docs;
    let names = &m.arg_names;
    let types = &m.arg_types;
    let method_name = m.name();
    let codec = args_codec(m);
    quote! {
        #(#docs)*
        #[track_caller]
        pub fn #ident(&self, #(#names: #types),*) -> #returns {
            let args = (#codec.encode)((#(#names,)*));
            #constructor(Self::NAME, #method_name, args)
        }
    }
}

/// `::infinitic::__private::argsN::<T0, .., Tn>()`: the method's argument codec. Stub and
/// dispatcher emit the same call with the user's type tokens, so an argument type that is not
/// a message is reported once, at the type.
fn args_codec(m: &Method) -> TokenStream {
    let types = &m.arg_types;
    let codec = quote::format_ident!("args{}", types.len());
    quote!(::infinitic::__private::#codec::<#(#types),*>())
}

/// Decodes `bytes` into the method's arguments, bound to the returned names; runs `on_error`
/// (which must diverge) with the decoding error bound to `e`.
pub(crate) fn decode_arguments(
    m: &Method,
    bytes: &Ident,
    on_error: TokenStream,
) -> (Vec<Ident>, TokenStream) {
    let names: Vec<Ident> = (0..m.arg_types.len())
        .map(|i| quote::format_ident!("__arg{}", i))
        .collect();
    let types = &m.arg_types;
    let codec = args_codec(m);
    let decode = quote! {
        let (#(#names,)*): (#(#types,)*) = match (#codec.decode)(#bytes) {
            ::core::result::Result::Ok(decoded) => decoded,
            ::core::result::Result::Err(e) => { #on_error }
        };
    };
    (names, decode)
}

/// Appends `suffix` to an identifier, keeping its span.
pub(crate) fn suffixed(ident: &Ident, suffix: &str) -> Ident {
    Ident::new(&format!("{ident}{suffix}"), ident.span())
}
