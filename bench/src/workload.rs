//! What the load consists of: which key each operation touches, and whether it reads or writes.

use rand::Rng;
use std::str::FromStr;

/// How keys are drawn from `0..keys`.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    Uniform,
    /// Zipf with exponent `s`: key `i` (0-based) is drawn with weight `1 / (i+1)^s`; `s` near 1
    /// makes a few hot keys take most of the traffic.
    Zipf(f64),
}

impl FromStr for Distribution {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "uniform" => Ok(Distribution::Uniform),
            None if s == "zipf" => Ok(Distribution::Zipf(0.99)),
            Some(("zipf", exponent)) => match exponent.parse::<f64>() {
                Ok(e) if e > 0.0 && e.is_finite() => Ok(Distribution::Zipf(e)),
                _ => Err(format!("zipf exponent must be a positive number, got `{exponent}`")),
            },
            _ => Err(format!("`{s}` is not a distribution (uniform, zipf, zipf:EXPONENT)")),
        }
    }
}

/// Draws key numbers.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform(u64),
    /// Cumulative weights, normalised to end at 1.0.
    Zipf(Vec<f64>),
}

impl KeyChooser {
    pub fn new(distribution: &Distribution, keys: u64) -> Self {
        match *distribution {
            Distribution::Uniform => KeyChooser::Uniform(keys),
            Distribution::Zipf(s) => {
                let mut total = 0.0;
                let mut cumulative: Vec<f64> = (1..=keys)
                    .map(|i| {
                        total += 1.0 / (i as f64).powf(s);
                        total
                    })
                    .collect();
                cumulative.iter_mut().for_each(|c| *c /= total);
                KeyChooser::Zipf(cumulative)
            }
        }
    }

    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        match self {
            KeyChooser::Uniform(keys) => rng.random_range(0..*keys),
            KeyChooser::Zipf(cumulative) => {
                let u: f64 = rng.random();
                cumulative.partition_point(|&c| c < u).min(cumulative.len() - 1) as u64
            }
        }
    }
}

/// The key string for key number `n`.
pub fn key_name(n: u64) -> String {
    format!("bench-key-{n:08}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parses_distributions() {
        assert_eq!("uniform".parse(), Ok(Distribution::Uniform));
        assert_eq!("zipf".parse(), Ok(Distribution::Zipf(0.99)));
        assert_eq!("zipf:1.2".parse(), Ok(Distribution::Zipf(1.2)));
        assert!("zipf:-1".parse::<Distribution>().is_err());
        assert!("normal".parse::<Distribution>().is_err());
    }

    #[test]
    fn uniform_spreads_and_zipf_concentrates() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let draws = 100_000;
        let count_first_ten = |chooser: &KeyChooser, rng: &mut rand::rngs::StdRng| {
            (0..draws).filter(|_| chooser.next(rng) < 10).count() as f64 / draws as f64
        };
        let uniform = KeyChooser::new(&Distribution::Uniform, 1000);
        let zipf = KeyChooser::new(&Distribution::Zipf(0.99), 1000);
        let u = count_first_ten(&uniform, &mut rng);
        let z = count_first_ten(&zipf, &mut rng);
        assert!((u - 0.01).abs() < 0.003, "uniform: {u}");
        assert!(z > 0.35, "zipf: the 10 hottest of 1000 keys take {z}");
        assert!((0..1000).all(|_| zipf.next(&mut rng) < 1000));
    }
}
