// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC3009} from "./ERC3009.sol";

/// @title A test dollar for demos and tests
/// @notice Six decimals like the common stablecoins, EIP-2612 `permit` and
/// EIP-3009 authorizations, in the EIP-712 domain
/// `{name: "Tollstream Test Dollar", version: "1"}`. The deployer may mint;
/// it is worth nothing.
contract TestStablecoin is ERC20Permit, ERC3009 {
    address public immutable minter;

    error NotMinter();

    constructor() ERC20("Tollstream Test Dollar", "tUSD") ERC20Permit("Tollstream Test Dollar") {
        minter = msg.sender;
    }

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Mints `amount` (units of 10^-6) to `to`; the deployer only.
    function mint(address to, uint256 amount) external {
        if (msg.sender != minter) revert NotMinter();
        _mint(to, amount);
    }
}
