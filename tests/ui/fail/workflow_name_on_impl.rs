use infinitic::prelude::*;

#[workflow]
trait Onboarding {
    async fn run(&self, user: String) -> bool;
}

#[derive(Default)]
struct OnboardingImpl;

#[workflow(name = "Onboarding.v2")]
impl Onboarding for OnboardingImpl {
    async fn run(&self, _user: String) -> bool {
        true
    }
}

fn main() {}
