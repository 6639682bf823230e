//! `#[channel]` methods of a `#[workflow]` trait: `fn approvals(&self) -> Channel<Approval>;`
//! declares a channel that clients and other workflows send signals to. The trait gets a body
//! for it (the workflow's code reaches the channel as `self.approvals()`), the stub a method
//! naming it for senders, and the workflow a table of its channels with their capacities.

use crate::errors::Errors;
use crate::signature::type_arguments;
use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::{
    punctuated::Punctuated, Attribute, Expr, ExprLit, FnArg, Ident, ItemTrait, Lit, Meta,
    ReturnType, Token, TraitItem, Type,
};

/// How many signals a channel buffers when `#[channel]` does not say.
const DEFAULT_CAPACITY: usize = 100;

/// One declared channel.
pub(crate) struct ChannelDecl {
    ident: Ident,
    docs: Vec<Attribute>,
    /// The type of its values.
    value: Type,
    capacity: usize,
}

/// Takes the `#[channel]` methods out of `item`, checking their shape.
pub(crate) fn take_channels(item: &mut ItemTrait, errors: &mut Errors) -> Vec<ChannelDecl> {
    let mut channels = Vec::new();
    item.items.retain(|trait_item| {
        let TraitItem::Fn(f) = trait_item else {
            return true;
        };
        let Some(attr) = f.attrs.iter().find(|a| a.path().is_ident("channel")) else {
            return true;
        };
        let capacity = capacity(attr, errors);
        let sig = &f.sig;
        let shape = "a channel is declared as `#[channel] fn name(&self) -> Channel<T>;` (no body, \
                     no other argument, not async)";
        let receiver_only = sig.inputs.len() == 1
            && matches!(sig.inputs.first(), Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none());
        let value = channel_value(&sig.output);
        match value {
            Some(value)
                if receiver_only
                    && sig.asyncness.is_none()
                    && f.default.is_none()
                    && sig.generics.params.is_empty() =>
            {
                channels.push(ChannelDecl {
                    ident: sig.ident.clone(),
                    docs: f
                        .attrs
                        .iter()
                        .filter(|a| a.path().is_ident("doc"))
                        .cloned()
                        .collect(),
                    value,
                    capacity,
                });
            }
            _ => errors.spanned(sig, shape),
        }
        false
    });
    channels
}

/// `T` of `Channel<T>`.
fn channel_value(output: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    match type_arguments(ty, "Channel")?.as_slice() {
        [value] => Some((*value).clone()),
        _ => None,
    }
}

/// `#[channel]` or `#[channel(capacity = N)]`.
fn capacity(attr: &Attribute, errors: &mut Errors) -> usize {
    let Meta::List(list) = &attr.meta else {
        return DEFAULT_CAPACITY;
    };
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(list.tokens.clone()) {
        Ok(metas) => metas,
        Err(e) => {
            errors.push(e);
            return DEFAULT_CAPACITY;
        }
    };
    let mut capacity = DEFAULT_CAPACITY;
    for meta in metas {
        match &meta {
            Meta::NameValue(nv) if nv.path.is_ident("capacity") => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Int(n), ..
                }) if n.base10_parse::<usize>().is_ok_and(|n| n > 0) => {
                    capacity = n.base10_parse().unwrap_or(DEFAULT_CAPACITY);
                }
                other => errors.spanned(other, "expected a positive number of signals"),
            },
            _ => errors.spanned(
                meta.path(),
                "#[channel] takes only `capacity = N`: how many signals it buffers",
            ),
        }
    }
    capacity
}

/// The trait's methods for the channels: the workflow's code receives through them.
pub(crate) fn trait_methods(channels: &[ChannelDecl]) -> Vec<TraitItem> {
    channels
        .iter()
        .map(|c| {
            let (ident, docs, value) = (&c.ident, &c.docs, &c.value);
            let name = ident.to_string();
            syn::parse_quote! {
                #(#docs)*
                fn #ident(&self) -> ::infinitic::__private::Channel<#value> {
                    ::infinitic::__private::Channel::new(#name)
                }
            }
        })
        .collect()
}

/// The stub's side: a method per channel naming it for senders, and the table of channels.
pub(crate) fn stub_items(channels: &[ChannelDecl]) -> TokenStream {
    let methods = channels.iter().map(|c| {
        let (ident, docs, value) = (&c.ident, &c.docs, &c.value);
        let name = ident.to_string();
        quote! {
            #(#docs)*
            pub fn #ident(&self) -> ::infinitic::__private::ChannelRef<#value> {
                ::infinitic::__private::ChannelRef::new(Self::NAME, #name)
            }
        }
    });
    let table = channels.iter().map(|c| {
        let name = c.ident.to_string();
        let capacity = c.capacity;
        quote!((#name, #capacity))
    });
    let checks = channels.iter().map(|c| {
        let value = &c.value;
        let span = syn::spanned::Spanned::span(value);
        quote::quote_spanned!(span=> ::infinitic::__private::assert_message::<#value>();)
    });
    quote! {
        /// The workflow's channels and how many signals each buffers.
        pub const CHANNELS: &'static [(&'static str, usize)] = &[#(#table),*];

        #(#methods)*

        #[doc(hidden)]
        pub fn __check_channels() {
            #(#checks)*
        }
    }
}
