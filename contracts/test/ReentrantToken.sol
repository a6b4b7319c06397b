// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title A token that calls back into a contract from its transfers (test
/// only)
/// @notice Once armed, the next `transfer` or `transferFrom` to `trigger` (or
/// to anyone, when `trigger` is 0) calls `target` with `data` after moving
/// the balance, as an ERC-777-style hook would. The re-entry's outcome is
/// recorded; with `bubble` set a failed re-entry reverts the transfer with
/// the same data. One shot: a transfer disarms the token before calling out.
/// The token can also act as a wallet (`execute`), so it can be a channel's
/// client or payee, and refuse the native coin (`setRefuseCoin`) to play a
/// wallet whose payouts fail. Anyone may mint, arm, execute and switch.
contract ReentrantToken is ERC20 {
    address public target;
    bytes public data;
    address public trigger;
    bool public bubble;
    bool public armed;
    bool public refuseCoin;

    /// @notice How many re-entries were attempted.
    uint256 public reentries;
    /// @notice Whether the last re-entry succeeded, and what it returned or
    /// reverted with.
    bool public lastSucceeded;
    bytes public lastResult;

    constructor() ERC20("Reentrant", "REENTER") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Arms the token: the next transfer to `trigger_` (0: any) calls
    /// `target_` with `data_`.
    function arm(address target_, bytes calldata data_, address trigger_, bool bubble_) external {
        (target, data, trigger, bubble, armed) = (target_, data_, trigger_, bubble_, true);
    }

    /// @notice Sends a call from this contract, bubbling a revert.
    function execute(address to, bytes calldata callData) external payable returns (bytes memory) {
        (bool ok, bytes memory result) = to.call{value: msg.value}(callData);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 32), mload(result))
            }
        }
        return result;
    }

    function transfer(address to, uint256 value) public override returns (bool) {
        super.transfer(to, value);
        _reenter(to);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        super.transferFrom(from, to, value);
        _reenter(to);
        return true;
    }

    function _reenter(address to) private {
        if (!armed || (trigger != address(0) && trigger != to)) return;
        armed = false;
        reentries += 1;
        (bool ok, bytes memory result) = target.call(data);
        (lastSucceeded, lastResult) = (ok, result);
        if (!ok && bubble) {
            assembly ("memory-safe") {
                revert(add(result, 32), mload(result))
            }
        }
    }

    function setRefuseCoin(bool refuse) external {
        refuseCoin = refuse;
    }

    error CoinRefused();

    receive() external payable {
        if (refuseCoin) revert CoinRefused();
    }
}
