//! Deposits in an ERC-20 token (PROTOCOL.md 1.1, "Token channels" and
//! "openChannel"): the token's own EIP-712 domain, the EIP-3009
//! `ReceiveWithAuthorization` a client signs for a gasless open, the
//! EIP-2612 `Permit` of `openWithPermit`, the nonce that binds an
//! authorization to a channel's terms, and token amounts for people.
//!
//! The structs are declared as Solidity with `sol!`, like [`crate::eip712`],
//! so their type strings and hashes are the ones the token contract and
//! viem compute.

use crate::encoding::Signature;
use crate::error::{ErrorCode, ProtocolError};
use crate::messages::{ServerInfo, TokenDomain};
use crate::signing::{SigningKey, recover};
use alloy_primitives::{Address, B256, U256, Uint, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, sol};
use std::borrow::Cow;

sol! {
    /// EIP-3009: `from` lets `to` (and only `to`, which must be the caller)
    /// pull `value` between `validAfter` and `validBefore`, once per
    /// `nonce`. The client signs it for a gasless open, with the channel
    /// registry as `to`.
    #[derive(Debug, PartialEq, Eq)]
    struct ReceiveWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    /// EIP-2612: `owner` approves `spender` for `value` until `deadline`;
    /// `nonce` is the owner's current `nonces(owner)` on the token.
    #[derive(Debug, PartialEq, Eq)]
    struct Permit {
        address owner;
        address spender;
        uint256 value;
        uint256 nonce;
        uint256 deadline;
    }
}

/// A token's own EIP-712 domain: its name and version (the `token_domain`
/// of `publicKey`), the chain's id and the token as `verifyingContract`.
///
/// The fields are private so the cached separator cannot fall out of step
/// with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSigningDomain {
    name: String,
    version: String,
    chain_id: u64,
    token: Address,
    separator: B256,
}

impl TokenSigningDomain {
    pub fn new(name: impl Into<String>, version: impl Into<String>, chain_id: u64, token: Address) -> Self {
        let (name, version) = (name.into(), version.into());
        let domain = Eip712Domain::new(
            Some(Cow::Owned(name.clone())),
            Some(Cow::Owned(version.clone())),
            Some(U256::from(chain_id)),
            Some(token),
            None,
        );
        let separator = domain.separator();
        TokenSigningDomain { name, version, chain_id, token, separator }
    }

    /// The domain of `token` on chain `chain_id` from the name and version a
    /// server announces.
    pub fn from_token_domain(domain: &TokenDomain, chain_id: u64, token: Address) -> Self {
        Self::new(domain.name.clone(), domain.version.clone(), chain_id, token)
    }

    /// The domain a client of `server` signs its authorization in, or `None`
    /// when the server announces no `token_domain` (no gasless open).
    pub fn of_server(server: &ServerInfo) -> Option<Self> {
        server.token_domain.as_ref().map(|domain| Self::from_token_domain(domain, server.chain_id, server.token))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The token contract, the domain's `verifyingContract`.
    pub fn token(&self) -> Address {
        self.token
    }

    /// The domain separator, as the token's `DOMAIN_SEPARATOR()` returns it.
    pub fn separator(&self) -> B256 {
        self.separator
    }

    /// The digest a signer signs for `value`: keccak256(0x1901 ‖ separator ‖ hashStruct).
    pub fn signing_hash<T: SolStruct>(&self, value: &T) -> B256 {
        let mut preimage = [0u8; 66];
        preimage[0] = 0x19;
        preimage[1] = 0x01;
        preimage[2..34].copy_from_slice(self.separator.as_slice());
        preimage[34..].copy_from_slice(value.eip712_hash_struct().as_slice());
        keccak256(preimage)
    }

    /// `key`'s signature of `value` in this domain, `r ‖ s ‖ v` with `v` ∈
    /// {27, 28} and a low `s`, as the token's `ecrecover` accepts it.
    pub fn sign<T: SolStruct>(&self, value: &T, key: &SigningKey) -> Signature {
        key.sign_digest(&self.signing_hash(value))
    }

    /// The address that signed `value` in this domain.
    ///
    /// # Errors
    /// A static description of why the signature is unusable (see
    /// [`recover`]).
    pub fn recover_signer<T: SolStruct>(&self, value: &T, signature: &Signature) -> Result<Address, &'static str> {
        recover(&self.signing_hash(value), signature).map(|key| key.address())
    }
}

/// The EIP-3009 nonce of a gasless open, as the registry computes it:
/// keccak256(abi.encode(address payee, address signer, uint64 expiresAt,
/// bytes32 salt)). It commits the authorization to the channel's terms, so
/// whoever submits it cannot open a channel on other terms.
pub fn authorization_nonce(payee: Address, signer: Address, expires_at: u64, salt: B256) -> B256 {
    // abi.encode pads every value to a 32-byte word, numbers on the left.
    let mut words = [0u8; 128];
    words[12..32].copy_from_slice(payee.as_slice());
    words[44..64].copy_from_slice(signer.as_slice());
    words[88..96].copy_from_slice(&expires_at.to_be_bytes());
    words[96..].copy_from_slice(salt.as_slice());
    keccak256(words)
}

/// The terms of an EIP-3009 `ReceiveWithAuthorization`, with times as unix
/// seconds like every time of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorization {
    /// The wallet whose tokens move: the channel's client wallet.
    pub from: Address,
    /// The only address that may submit it and receive the tokens: the
    /// channel registry.
    pub to: Address,
    /// The deposit.
    pub value: U256,
    /// Valid strictly after this time.
    pub valid_after: u64,
    /// Valid strictly before this time.
    pub valid_before: u64,
    /// For a gasless open, [`authorization_nonce`] of the channel's terms.
    pub nonce: B256,
}

impl Authorization {
    /// The EIP-712 struct the token verifies.
    pub fn typed(&self) -> ReceiveWithAuthorization {
        ReceiveWithAuthorization {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        }
    }

    /// The digest the `from` wallet signs, in the token's `domain`.
    pub fn signing_hash(&self, domain: &TokenSigningDomain) -> B256 {
        domain.signing_hash(&self.typed())
    }

    /// `key`'s signature of these terms; `key` should be `from`'s.
    pub fn sign(&self, domain: &TokenSigningDomain, key: &SigningKey) -> Signature {
        domain.sign(&self.typed(), key)
    }

    /// The address that signed these terms.
    ///
    /// # Errors
    /// A static description of why the signature is unusable.
    pub fn recover_signer(&self, domain: &TokenSigningDomain, signature: &Signature) -> Result<Address, &'static str> {
        domain.recover_signer(&self.typed(), signature)
    }

    /// Checks that `signature` is `from`'s signature of exactly these terms,
    /// which the token would accept.
    ///
    /// # Errors
    /// `invalid_signature` when it is another signer's, or malformed.
    pub fn verify(&self, domain: &TokenSigningDomain, signature: &Signature) -> Result<(), ProtocolError> {
        match self.recover_signer(domain, signature) {
            Ok(signer) if signer == self.from => Ok(()),
            Ok(_) => Err(ProtocolError::new(
                ErrorCode::InvalidSignature,
                "the authorization is not signed by client_wallet_address for these terms",
            )),
            Err(why) => Err(ProtocolError::new(ErrorCode::InvalidSignature, format!("authorization: {why}"))),
        }
    }
}

/// Whether a symbol names a dollar stablecoin ("USDC", "USDT", "usd"…),
/// shown as dollars.
fn is_dollar(symbol: &str) -> bool {
    symbol.to_ascii_uppercase().contains("USD")
}

/// The decimal form of `digits` (an integer's decimal digits) scaled down by
/// `decimals`, with trailing fractional zeros trimmed down to `min_fraction`
/// digits.
fn scaled(digits: &str, decimals: u8, min_fraction: usize) -> String {
    let decimals = usize::from(decimals);
    let padded =
        if digits.len() <= decimals { format!("{digits:0>width$}", width = decimals + 1) } else { digits.to_owned() };
    let (whole, fraction) = padded.split_at(padded.len() - decimals);
    let mut fraction = fraction.trim_end_matches('0').to_owned();
    while fraction.len() < min_fraction {
        fraction.push('0');
    }
    if fraction.is_empty() { whole.to_owned() } else { format!("{whole}.{fraction}") }
}

/// `digits` of smallest units for a person: dollars for a USD token,
/// otherwise the amount and its symbol.
fn format_digits(digits: &str, decimals: u8, symbol: &str) -> String {
    if is_dollar(symbol) {
        format!("${}", scaled(digits, decimals, 2))
    } else if symbol.is_empty() {
        scaled(digits, decimals, 0)
    } else {
        format!("{} {symbol}", scaled(digits, decimals, 0))
    }
}

/// An amount of a token's smallest units for a person, exactly (no
/// rounding): `$0.60`, `$1.234567`, `$0.0025` for a token whose symbol
/// contains "USD" (at least two decimals), `0.00025 ETH` otherwise
/// (trailing zeros trimmed).
pub fn format_amount(amount: U256, decimals: u8, symbol: &str) -> String {
    format_digits(&amount.to_string(), decimals, symbol)
}

/// Wide enough for `window_price` × 3600 × 10^k over any positive finite
/// `f64` window (k ≤ 342): a display function need not be fast.
type Wide = Uint<1600, 25>;

/// A positive finite `f64` as the shortest decimal that reads back as it
/// (`0.1` is 1 × 10^-1, not the binary fraction nearest to it): a mantissa
/// and a power of ten. `None` for zero, negative or non-finite values.
fn shortest_decimal(value: f64) -> Option<(u64, i32)> {
    if !(value.is_finite() && value > 0.0) {
        return None;
    }
    // `{:e}` prints the shortest round-trip digits, e.g. `1.2345e3`.
    let text = format!("{value:e}");
    let (mantissa, exponent) = text.split_once('e')?;
    let exponent: i32 = exponent.parse().ok()?;
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: u64 = format!("{whole}{fraction}").parse().ok()?;
    Some((digits, exponent - i32::try_from(fraction.len()).ok()?))
}

/// The price of an hour of stream for a person, e.g. `$0.60 per hour`:
/// `window_price` × 3600 / `window_seconds`, computed exactly and rounded
/// to the nearest smallest unit. A fractional `window_seconds` counts as
/// the decimal it is written as (`0.1` s is a tenth of a second). A window
/// that is not positive and finite (which [`ServerInfo`] never decodes) has
/// no hourly rate, so the price is shown per window.
pub fn format_price_per_hour(window_price: U256, window_seconds: f64, decimals: u8, symbol: &str) -> String {
    let Some((mantissa, exponent)) = shortest_decimal(window_seconds) else {
        return format!("{} per window", format_amount(window_price, decimals, symbol));
    };
    let ten = Wide::from(10u8);
    // window_seconds = mantissa × 10^exponent, so per hour =
    // price × 3600 × 10^-exponent / mantissa.
    let mut numerator = Wide::from(window_price) * Wide::from(3600u16);
    let mut denominator = Wide::from(mantissa);
    if exponent < 0 {
        numerator *= ten.pow(Wide::from(exponent.unsigned_abs()));
    } else {
        // f64 stops near 1.8e308; 10^309 overflows nothing here, and a
        // denominator beyond the numerator only rounds to zero.
        denominator *= ten.pow(Wide::from(exponent.unsigned_abs()));
    }
    let per_hour = (numerator + denominator / Wide::from(2u8)) / denominator;
    format!("{} per hour", format_digits(&per_hour.to_string(), decimals, symbol))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel_id::channel_id;
    use alloy_primitives::address;
    use alloy_sol_types::SolValue;

    fn usd() -> TokenSigningDomain {
        TokenSigningDomain::new(
            "Tollstream Test Dollar",
            "1",
            31337,
            address!("e7f1725E7734CE288F8367e1Bb143E90bb3F0512"),
        )
    }

    #[test]
    fn type_strings_are_the_eips() {
        assert_eq!(
            ReceiveWithAuthorization::eip712_encode_type(),
            "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
        );
        assert_eq!(
            Permit::eip712_encode_type(),
            "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
        );
    }

    #[test]
    fn the_cached_separator_is_alloys() {
        let domain = usd();
        let alloy = alloy_sol_types::eip712_domain! {
            name: "Tollstream Test Dollar",
            version: "1",
            chain_id: 31337,
            verifying_contract: domain.token(),
        };
        assert_eq!(domain.separator(), alloy.separator());
        let permit = Permit {
            owner: Address::repeat_byte(1),
            spender: Address::repeat_byte(2),
            value: U256::from(5),
            nonce: U256::ZERO,
            deadline: U256::MAX,
        };
        assert_eq!(domain.signing_hash(&permit), permit.eip712_signing_hash(&alloy));
        let from_wire = TokenDomain { name: "Tollstream Test Dollar".into(), version: "1".into() };
        assert_eq!(TokenSigningDomain::from_token_domain(&from_wire, 31337, domain.token()), domain);
    }

    #[test]
    fn the_nonce_is_the_abi_encoding_of_the_terms() {
        let (payee, signer, salt) = (Address::repeat_byte(0xaa), Address::repeat_byte(0xbb), B256::repeat_byte(0xcc));
        for expires_at in [0, 1_767_225_600, u64::MAX] {
            let expected = keccak256((payee, signer, expires_at, salt).abi_encode_params());
            assert_eq!(authorization_nonce(payee, signer, expires_at, salt), expected);
        }
        // Every term changes the nonce.
        let nonce = authorization_nonce(payee, signer, 1, salt);
        assert_ne!(nonce, authorization_nonce(signer, payee, 1, salt));
        assert_ne!(nonce, authorization_nonce(payee, signer, 2, salt));
        assert_ne!(nonce, authorization_nonce(payee, signer, 1, B256::ZERO));
        // And it is not the channel id of the same words.
        assert_ne!(nonce, channel_id(payee, signer, salt));
    }

    #[test]
    fn an_authorization_verifies_only_for_its_signer_and_terms() {
        let domain = usd();
        let wallet = SigningKey::from_bytes([7; 32]).unwrap();
        let authorization = Authorization {
            from: wallet.address(),
            to: Address::repeat_byte(0x11),
            value: U256::from(600_000),
            valid_after: 0,
            valid_before: 1_767_225_600,
            nonce: B256::repeat_byte(0x22),
        };
        let signature = authorization.sign(&domain, &wallet);
        assert!(matches!(signature.0[64], 27 | 28));
        assert_eq!(authorization.recover_signer(&domain, &signature), Ok(wallet.address()));
        authorization.verify(&domain, &signature).unwrap();

        let other_terms = Authorization { value: U256::from(600_001), ..authorization };
        assert_eq!(other_terms.verify(&domain, &signature).unwrap_err().code, ErrorCode::InvalidSignature);
        let other_domain = TokenSigningDomain::new("Tollstream Test Dollar", "2", 31337, domain.token());
        assert_eq!(authorization.verify(&other_domain, &signature).unwrap_err().code, ErrorCode::InvalidSignature);
        let stranger = SigningKey::from_bytes([8; 32]).unwrap();
        let forged = authorization.sign(&domain, &stranger);
        assert_eq!(authorization.verify(&domain, &forged).unwrap_err().code, ErrorCode::InvalidSignature);
        let mut bad_v = signature;
        bad_v.0[64] = 0;
        assert_eq!(authorization.verify(&domain, &bad_v).unwrap_err().code, ErrorCode::InvalidSignature);
    }

    #[test]
    fn dollars_show_at_least_cents() {
        let dollars = |units: u64| format_amount(U256::from(units), 6, "USDC");
        assert_eq!(dollars(600_000), "$0.60");
        assert_eq!(dollars(1_234_567), "$1.234567");
        assert_eq!(dollars(2_500), "$0.0025");
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(1), "$0.000001");
        assert_eq!(dollars(5_000_000), "$5.00");
        assert_eq!(dollars(12_345_000_000), "$12345.00");
        assert_eq!(format_amount(U256::from(7), 0, "usd"), "$7.00");
        assert_eq!(format_amount(U256::from(7), 1, "tUSD"), "$0.70");
    }

    #[test]
    fn other_tokens_show_their_symbol() {
        let wei = |amount: U256| format_amount(amount, 18, "ETH");
        assert_eq!(wei(U256::from(250_000_000_000_000u64)), "0.00025 ETH");
        assert_eq!(wei(U256::from(10).pow(U256::from(18))), "1 ETH");
        assert_eq!(wei(U256::from(1)), "0.000000000000000001 ETH");
        assert_eq!(wei(U256::ZERO), "0 ETH");
        assert_eq!(
            wei(U256::MAX),
            "115792089237316195423570985008687907853269984665640564039457.584007913129639935 ETH"
        );
        assert_eq!(format_amount(U256::MAX, 0, "WEI"), format!("{} WEI", U256::MAX));
        assert_eq!(format_amount(U256::from(5), 255, "X"), format!("0.{}5 X", "0".repeat(254)));
        assert_eq!(format_amount(U256::from(1500), 3, ""), "1.5");
    }

    #[test]
    fn an_hour_is_priced_exactly() {
        let hourly = |price: u64, seconds: f64| format_price_per_hour(U256::from(price), seconds, 6, "USDC");
        // 10 s windows at $0.001666…: 360 windows.
        assert_eq!(hourly(1_666, 10.0), "$0.59976 per hour");
        assert_eq!(hourly(10_000, 60.0), "$0.60 per hour");
        assert_eq!(hourly(600_000, 3600.0), "$0.60 per hour");
        assert_eq!(hourly(0, 10.0), "$0.00 per hour");
        // A tenth of a second is a tenth, not the binary fraction near it.
        assert_eq!(format_price_per_hour(U256::from(100_000_000_000_000u64), 0.1, 18, "ETH"), "3.6 ETH per hour");
        assert_eq!(hourly(1, 0.25), "$0.0144 per hour");
        // Rounded to the nearest unit: 3600 / 7 = 514.29 units.
        assert_eq!(hourly(1, 7.0), "$0.000514 per hour");
        assert_eq!(hourly(1, 4800.0), "$0.000001 per hour"); // 0.75 rounds up
        assert_eq!(hourly(1, 1e300), "$0.00 per hour");
        // Huge prices and tiny windows do not overflow.
        let max = format_price_per_hour(U256::MAX, 1e-300, 0, "T");
        let exact = Wide::from(U256::MAX) * Wide::from(3600u16);
        assert_eq!(max, format!("{exact}{} T per hour", "0".repeat(300)));
        assert_eq!(
            format_price_per_hour(U256::MAX, 3600.0, 18, "ETH"),
            format!("{} per hour", format_amount(U256::MAX, 18, "ETH"))
        );
        // No hourly rate without a window.
        assert_eq!(hourly(600_000, 0.0), "$0.60 per window");
        assert_eq!(hourly(600_000, f64::NAN), "$0.60 per window");
    }
}
