// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

interface IChannelRegistry {
    function open(address payee, address signer, uint64 expiresAt, bytes32 salt)
        external
        payable
        returns (bytes32 channelId);
}

/// @notice A hostile client wallet: cheap to pay while a node estimates gas
/// (gas price 0 there) and burning all the gas the registry forwards with a
/// payout when the transaction is mined. Without headroom for that, a batch
/// of closes holding one of its channels runs out of gas and reverts.
contract GasBurningWallet {
    function openOn(IChannelRegistry registry, address payee, address signer, uint64 expiresAt, bytes32 salt)
        external
        payable
        returns (bytes32)
    {
        return registry.open{value: msg.value}(payee, signer, expiresAt, salt);
    }

    receive() external payable {
        if (tx.gasprice > 0) {
            while (true) {}
        }
    }
}
