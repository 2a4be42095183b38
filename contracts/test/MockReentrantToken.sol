// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/**
 * @title MockReentrantToken
 * @notice Test-only ERC-20 (with permit) whose `transfer` calls back into a market when armed, the
 * way a token with transfer hooks (ERC-777 style) or a malicious token would. Used to show that
 * every function of TaskMarket that pays out refuses to be re-entered.
 * @dev Armed once with {arm}; the next `transfer` sent by `target` disarms it, then calls `target`
 * with `data` as this contract. With `bubble`, a failing call reverts the transfer with the
 * callee's revert data; otherwise the outcome is recorded in {lastCallSucceeded} and
 * {lastCallReturnData} and the transfer goes on.
 */
contract MockReentrantToken is ERC20, ERC20Permit {
    address public target;
    bytes public data;
    bool public bubble;
    bool public armed;

    bool public lastCallSucceeded;
    bytes public lastCallReturnData;
    uint256 public reentries;

    constructor(address holder, uint256 supply) ERC20("Mock Reentrant Token", "MRT") ERC20Permit("Mock Reentrant Token") {
        _mint(holder, supply);
    }

    /// @notice Makes the next `transfer` sent by `target_` call `target_` with `data_`.
    function arm(address target_, bytes calldata data_, bool bubble_) external {
        target = target_;
        data = data_;
        bubble = bubble_;
        armed = true;
    }

    function disarm() external {
        armed = false;
    }

    /// @notice Lets this contract act as an account (approve, join, claim...) in the tests.
    function execute(address to, bytes calldata callData) external returns (bytes memory) {
        (bool ok, bytes memory result) = to.call(callData);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 0x20), mload(result))
            }
        }
        return result;
    }

    function transfer(address to, uint256 value) public override returns (bool) {
        bool ok = super.transfer(to, value);
        if (armed && msg.sender == target) {
            armed = false;
            reentries += 1;
            (bool success, bytes memory result) = target.call(data);
            lastCallSucceeded = success;
            lastCallReturnData = result;
            if (!success && bubble) {
                assembly ("memory-safe") {
                    revert(add(result, 0x20), mload(result))
                }
            }
        }
        return ok;
    }
}
