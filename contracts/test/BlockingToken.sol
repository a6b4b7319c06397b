// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title A token whose owner can block addresses (test only)
/// @notice Like the blocklists of the common stablecoins: a transfer to a
/// blocked address reverts. The deployer is the owner. Anyone may mint.
contract BlockingToken is ERC20 {
    address public immutable owner;
    mapping(address => bool) public blocked;

    error NotOwner();
    error Blocked(address account);

    constructor() ERC20("Blocking", "BLOCK") {
        owner = msg.sender;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Blocks or unblocks `account`; the owner only.
    function setBlocked(address account, bool isBlocked) external {
        if (msg.sender != owner) revert NotOwner();
        blocked[account] = isBlocked;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (blocked[to]) revert Blocked(to);
        super._update(from, to, value);
    }
}
