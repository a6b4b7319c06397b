//! An ERC-20 deposit token as the server and its viewers see it: its
//! display terms, the signatures it takes (EIP-2612 permits, EIP-3009
//! authorizations), and a viewer's approve, balance and permit nonce.

use crate::error::ChainError;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};

alloy::sol! {
    /// The parts of an ERC-20 token the project uses, with the optional
    /// EIP-2612 (`nonces`), EIP-5267 (`eip712Domain`) and EIP-3009
    /// (`authorizationState`) views probed to learn what it supports.
    #[sol(rpc)]
    #[derive(Debug)]
    interface DepositToken {
        function name() external view returns (string);
        function symbol() external view returns (string);
        function decimals() external view returns (uint8);
        function balanceOf(address owner) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
        function approve(address spender, uint256 value) external returns (bool);
        function nonces(address owner) external view returns (uint256);
        function version() external view returns (string);
        function eip712Domain() external view returns (
            bytes1 fields,
            string name,
            string version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] extensions
        );
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
    }
}

/// What a token is, as read from its contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub address: Address,
    pub symbol: String,
    /// Units per whole token are 10^decimals.
    pub decimals: u8,
    /// The token's EIP-712 domain name and version, when it has one
    /// (EIP-5267's `eip712Domain`, or `name()` with `version()`).
    pub domain: Option<(String, String)>,
    /// Whether it takes EIP-2612 permits.
    pub permit: bool,
    /// Whether it takes EIP-3009 authorizations (`receiveWithAuthorization`).
    pub authorization: bool,
}

/// Reads `token`'s display terms and probes which signatures it takes.
///
/// # Errors
/// `Other` when `token` has no code or is not an ERC-20 (no `symbol` or
/// `decimals`); `Unavailable` when the node cannot be reached.
pub async fn token_info(provider: &DynProvider, token: Address) -> Result<TokenInfo, ChainError> {
    let code = provider.get_code_at(token).await.map_err(ChainError::from_transport)?;
    if code.is_empty() {
        return Err(ChainError::Other(format!("{} is not a contract on this chain", token.to_checksum(None))));
    }
    let contract = DepositToken::new(token, provider);
    let not_erc20 = |e: alloy::contract::Error| {
        ChainError::Other(format!("{} is not an ERC-20 token: {e}", token.to_checksum(None)))
    };
    let symbol = contract.symbol().call().await.map_err(not_erc20)?;
    let decimals = contract.decimals().call().await.map_err(not_erc20)?;
    let domain = match contract.eip712Domain().call().await {
        Ok(domain) => Some((domain.name, domain.version)),
        Err(_) => match (contract.name().call().await, contract.version().call().await) {
            (Ok(name), Ok(version)) => Some((name, version)),
            _ => None,
        },
    };
    let permit = contract.nonces(Address::ZERO).call().await.is_ok();
    let authorization = contract.authorizationState(Address::ZERO, Default::default()).call().await.is_ok();
    Ok(TokenInfo { address: token, symbol, decimals, domain, permit, authorization })
}

/// `owner`'s balance of `token`, in its smallest unit.
///
/// # Errors
/// `Unavailable`, or `Reverted` when `token` is no ERC-20.
pub async fn token_balance(provider: &DynProvider, token: Address, owner: Address) -> Result<U256, ChainError> {
    DepositToken::new(token, provider).balanceOf(owner).call().await.map_err(ChainError::from_contract)
}

/// The terms of a gasless open: the registry's `openWithAuthorization`.
#[derive(Debug, Clone)]
pub struct AuthorizedOpen {
    pub token: Address,
    /// The wallet whose deposit the authorization moves.
    pub client: Address,
    /// The deposit, in the token's smallest unit.
    pub amount: U256,
    pub payee: Address,
    pub signer: Address,
    /// Unix seconds (block time).
    pub expires_at: u64,
    pub salt: alloy::primitives::B256,
    /// The authorization's window, unix seconds.
    pub valid_after: u64,
    pub valid_before: u64,
    /// The client wallet's 65-byte `r ‖ s ‖ v` EIP-3009 signature.
    pub signature: alloy::primitives::Bytes,
}

impl AuthorizedOpen {
    /// The calldata of `openWithAuthorization` with these terms.
    pub fn calldata(&self) -> alloy::primitives::Bytes {
        use alloy::sol_types::SolCall;
        crate::contract::TollstreamChannels::openWithAuthorizationCall {
            token: self.token,
            client: self.client,
            amount: self.amount,
            payee: self.payee,
            signer: self.signer,
            expiresAt: self.expires_at,
            salt: self.salt,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            signature: self.signature.clone(),
        }
        .abi_encode()
        .into()
    }
}
