//! Bindings of the channel registry contract and the test dollar, generated
//! by `sol!` from the committed artifacts (`contracts/*.json`), and their
//! deployment.

// The generated call builders take one argument per Solidity parameter.
#![allow(clippy::too_many_arguments)]

use crate::error::ChainError;
use alloy::primitives::Address;
use alloy::providers::Provider;

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    TollstreamChannels,
    "../../contracts/TollstreamChannels.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    TestStablecoin,
    "../../contracts/TestStablecoin.json"
);

/// Deploys a fresh channel registry with `provider`'s wallet and returns its
/// address once the deployment is mined.
///
/// # Errors
/// When the node refuses the transaction or the RPC fails.
pub async fn deploy<P: Provider>(provider: P) -> Result<Address, ChainError> {
    let instance = TollstreamChannels::deploy(provider).await.map_err(ChainError::from_contract)?;
    Ok(*instance.address())
}

/// Deploys the test dollar (6 decimals, EIP-2612 and EIP-3009; worthless,
/// for demos and tests) with `provider`'s wallet as its minter.
///
/// # Errors
/// When the node refuses the transaction or the RPC fails.
pub async fn deploy_test_stablecoin<P: Provider>(provider: P) -> Result<Address, ChainError> {
    let instance = TestStablecoin::deploy(provider).await.map_err(ChainError::from_contract)?;
    Ok(*instance.address())
}
