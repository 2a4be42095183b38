// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/**
 * @title FMToken
 * @notice The fedmarket token: reward pools and stakes are paid in it. Fixed supply, minted once
 * at deployment; EIP-2612 permit lets a task owner fund a task without sending a transaction.
 */
contract FMToken is ERC20, ERC20Permit {
    constructor(address holder, uint256 supply) ERC20("FedMarket Token", "FMT") ERC20Permit("FedMarket Token") {
        _mint(holder, supply);
    }
}
