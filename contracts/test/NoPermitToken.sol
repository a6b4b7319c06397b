// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title A plain ERC-20 without EIP-2612 `permit` (test only)
/// @notice A call to `permit` reverts (no such function, no fallback), as it
/// does on tokens that predate EIP-2612. Anyone may mint.
contract NoPermitToken is ERC20 {
    constructor() ERC20("No Permit", "NOPERMIT") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
