use infinitic::prelude::*;

struct Onboarding;

#[workflow]
impl Onboarding {
    async fn run(&self, _user: String) -> bool {
        true
    }
}

fn main() {
    let _ = Onboarding.run(String::new());
}
