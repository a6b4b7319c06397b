// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title A token whose transfers can fail by returning false (test only)
/// @notice While `failing` is set, `transfer` and `transferFrom` move nothing
/// and return false instead of reverting, as some early tokens did. Anyone
/// may mint and flip the switch.
contract FalseReturningToken is ERC20 {
    bool public failing;

    constructor() ERC20("False Returning", "FALSE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setFailing(bool failing_) external {
        failing = failing_;
    }

    function transfer(address to, uint256 value) public override returns (bool) {
        if (failing) return false;
        return super.transfer(to, value);
    }

    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        if (failing) return false;
        return super.transferFrom(from, to, value);
    }
}
