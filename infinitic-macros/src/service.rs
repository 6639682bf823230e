//! `#[service]` on a trait: the workflow-side stub and the worker-side dispatcher.

use crate::attr;
use crate::errors::Errors;
use crate::signature::{
    assert_message_types, decode_arguments, read_methods, rewrite_trait, stub_method, suffixed,
    Method,
};
use proc_macro2::TokenStream;
use quote::quote;
use syn::{Item, ItemTrait, LitStr};

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = attr::parse("service", attr, &mut errors);
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Trait(t)) => t,
        Ok(other) => {
            errors.spanned(
                other,
                "#[service] goes on a trait that declares the service's `async fn` methods",
            );
            let errors = errors.to_compile_errors();
            return quote!(#item #errors);
        }
        Err(e) => return e.to_compile_error(),
    };
    let methods = read_methods(&item, "service", &mut errors);
    if !errors.is_empty() {
        let errors = errors.to_compile_errors();
        return quote!(#item #errors);
    }
    generate(&item, args.name, &methods)
}

fn generate(item: &ItemTrait, name: Option<LitStr>, methods: &[Method]) -> TokenStream {
    let vis = &item.vis;
    let trait_ident = &item.ident;
    let stub = suffixed(trait_ident, "Stub");
    let dispatcher = suffixed(trait_ident, "Dispatcher");
    let name = name.unwrap_or_else(|| LitStr::new(&trait_ident.to_string(), trait_ident.span()));
    let rewritten = rewrite_trait(item);
    let method_names: Vec<String> = methods.iter().map(Method::name).collect();
    let assertions = assert_message_types(methods);

    let stub_methods = methods.iter().map(|m| {
        let (ok, err) = match m.fallible() {
            Some((ok, err)) => (quote!(#ok), quote!(#err)),
            None => {
                let out = &m.output;
                (quote!(#out), quote!(::infinitic::__private::NoError))
            }
        };
        stub_method(
            m,
            quote!(::infinitic::__private::ServiceCall<#ok, #err>),
            quote!(::infinitic::__private::ServiceCall::from_args),
        )
    });

    let dispatch_arms = methods.iter().map(|m| {
        let ident = &m.ident;
        let method_name = m.name();
        let (names, decode) = decode_arguments(
            m,
            &quote::format_ident!("args"),
            quote!(return ::infinitic::__private::bad_arguments(Self::NAME, method, e);),
        );
        let encode = if m.fallible().is_some() {
            quote!(::infinitic::__private::encode_fallible(__output))
        } else {
            quote!(::infinitic::__private::encode_value(&__output))
        };
        quote! {
            #method_name => {
                #decode
                let service = ::infinitic::__private::Arc::clone(service);
                ::infinitic::__private::guard_task(async move {
                    let __output = <S as #trait_ident>::#ident(&*service, #(#names),*).await;
                    #encode
                })
            }
        }
    });

    let stub_doc = format!(
        "Workflow-side stub of [`{trait_ident}`]: each method call, awaited in a workflow, is a durable step that resolves to the method's value or a typed [`StepError`](::infinitic::StepError)."
    );
    let dispatcher_doc = format!(
        "Worker-side dispatcher of [`{trait_ident}`]: decodes a call, runs it on your implementation and encodes the result. Register it with a worker or `WorkflowTester`."
    );

    quote! {
        #rewritten

        #[doc = #stub_doc]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #vis struct #stub;

        impl #stub {
            /// The name under which the service is registered.
            pub const NAME: &'static str = #name;
            /// The service's method names.
            pub const METHODS: &'static [&'static str] = &[#(#method_names),*];

            #(#stub_methods)*

            #[doc(hidden)]
            pub fn __dispatch<S: #trait_ident>(
                service: &::infinitic::__private::Arc<S>,
                method: &str,
                args: &[u8],
            ) -> ::infinitic::__private::TaskFuture {
                match method {
                    #(#dispatch_arms)*
                    _ => ::infinitic::__private::unknown_method(Self::NAME, method),
                }
            }
        }

        #[doc = #dispatcher_doc]
        #vis struct #dispatcher<S>(::infinitic::__private::Arc<S>);

        impl<S: #trait_ident> #dispatcher<S> {
            /// Wraps an implementation.
            pub fn new(service: S) -> Self {
                Self(::infinitic::__private::Arc::new(service))
            }

            /// Wraps a shared implementation.
            pub fn from_arc(service: ::infinitic::__private::Arc<S>) -> Self {
                Self(service)
            }
        }

        impl<S> ::core::fmt::Debug for #dispatcher<S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#dispatcher)).field("name", &#stub::NAME).finish()
            }
        }

        impl<S: #trait_ident> ::infinitic::__private::Service for #dispatcher<S> {
            fn name(&self) -> &'static str {
                #stub::NAME
            }

            fn methods(&self) -> &'static [&'static str] {
                #stub::METHODS
            }

            fn dispatch(&self, method: &str, args: &[u8]) -> ::infinitic::__private::TaskFuture {
                #stub::__dispatch(&self.0, method, args)
            }
        }

        #assertions
    }
}
