//! `#[workflow]` on a trait (the contract: stub for clients and parent workflows, and the
//! method table) and on its impl (registration and compile-time determinism checks).

use crate::attr;
use crate::channels;
use crate::determinism;
use crate::errors::Errors;
use crate::signature::{
    assert_message_types, decode_arguments, read_methods, rewrite_trait, stub_method, suffixed,
    Method,
};
use proc_macro2::TokenStream;
use quote::quote;
use syn::{Item, ItemImpl, ItemTrait, LitStr};

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Trait(mut t)) => {
            let args = attr::parse("workflow", attr, &mut errors);
            let channels = channels::take_channels(&mut t, &mut errors);
            determinism::check_trait(&mut t, &mut errors);
            let methods = read_methods(&t, "workflow", &mut errors);
            if errors.is_empty() {
                expand_trait(&t, args.name, &methods, &channels)
            } else {
                let errors = errors.to_compile_errors();
                quote!(#t #errors)
            }
        }
        Ok(Item::Impl(i)) => {
            if !attr.is_empty() {
                errors.spanned(
                    &attr,
                    "the workflow's name is set on its trait: put #[workflow(name = \"...\")] on the trait",
                );
            }
            expand_impl(i, errors)
        }
        Ok(other) => {
            errors.spanned(
                &other,
                "#[workflow] goes on a trait (the workflow's contract) or on the impl of that trait",
            );
            let errors = errors.to_compile_errors();
            quote!(#other #errors)
        }
        Err(e) => e.to_compile_error(),
    }
}

fn expand_trait(
    item: &ItemTrait,
    name: Option<LitStr>,
    methods: &[Method],
    channels: &[channels::ChannelDecl],
) -> TokenStream {
    let vis = &item.vis;
    let trait_ident = &item.ident;
    let stub = suffixed(trait_ident, "Stub");
    let name = name.unwrap_or_else(|| LitStr::new(&trait_ident.to_string(), trait_ident.span()));
    let mut rewritten = rewrite_trait(item);
    rewritten.items.extend(channels::trait_methods(channels));
    let channel_items = channels::stub_items(channels);
    let method_names: Vec<String> = methods.iter().map(Method::name).collect();
    let assertions = assert_message_types(methods);

    let stub_methods = methods.iter().map(|m| {
        let output = &m.output;
        stub_method(
            m,
            quote!(::infinitic::__private::WorkflowCall<#output>),
            quote!(::infinitic::__private::WorkflowCall::from_args),
        )
    });

    let start_arms = methods.iter().map(|m| {
        let ident = &m.ident;
        let method_name = m.name();
        let (names, decode) = decode_arguments(
            m,
            &quote::format_ident!("input"),
            quote!(return ::core::result::Result::Err(
                ::infinitic::__private::bad_workflow_arguments(Self::NAME, method, e),
            );),
        );
        quote! {
            #method_name => {
                #decode
                ::core::result::Result::Ok(::infinitic::__private::Box::pin(async move {
                    let __output = <W as #trait_ident>::#ident(&workflow, #(#names),*).await;
                    ::infinitic::__private::encode_workflow_output(&__output)
                }))
            }
        }
    });

    let stub_doc = format!(
        "Typed handle of the [`{trait_ident}`] workflow: each method builds a [`WorkflowCall`](::infinitic::WorkflowCall) that a parent workflow awaits as a child workflow, or that a client starts."
    );

    quote! {
        #rewritten

        #[doc = #stub_doc]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #vis struct #stub;

        impl #stub {
            /// The name under which the workflow is registered.
            pub const NAME: &'static str = #name;
            /// The workflow's method names.
            pub const METHODS: &'static [&'static str] = &[#(#method_names),*];

            #(#stub_methods)*

            #channel_items

            #[doc(hidden)]
            pub fn __start<W: #trait_ident>(
                workflow: W,
                method: &str,
                input: &[u8],
            ) -> ::core::result::Result<::infinitic::__private::WorkflowFuture, ::infinitic::__private::DispatchError> {
                match method {
                    #(#start_arms)*
                    _ => ::core::result::Result::Err(
                        ::infinitic::__private::unknown_workflow_method(Self::NAME, method),
                    ),
                }
            }
        }

        #assertions
    }
}

fn expand_impl(mut item: ItemImpl, mut errors: Errors) -> TokenStream {
    determinism::check_impl(&mut item, &mut errors);
    let Some((_, trait_path, _)) = &item.trait_ else {
        errors.spanned(
            &item.self_ty,
            "#[workflow] goes on `impl YourWorkflowTrait for YourType`, the implementation of a #[workflow] trait",
        );
        let errors = errors.to_compile_errors();
        return quote!(#item #errors);
    };
    let mut stub_path = trait_path.clone();
    if let Some(last) = stub_path.segments.last_mut() {
        last.ident = suffixed(&last.ident, "Stub");
    }
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let errors = errors.to_compile_errors();
    quote! {
        #item

        impl #impl_generics ::infinitic::__private::Workflow for #self_ty #where_clause {
            const NAME: &'static str = #stub_path::NAME;
            const CHANNELS: &'static [(&'static str, usize)] = #stub_path::CHANNELS;

            fn start(
                self,
                method: &str,
                input: &[u8],
            ) -> ::core::result::Result<::infinitic::__private::WorkflowFuture, ::infinitic::__private::DispatchError> {
                #stub_path::__start(self, method, input)
            }
        }

        #errors
    }
}
