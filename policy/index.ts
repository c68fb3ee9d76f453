// The wgexit policy pack: pulumi preview --policy-pack policy
// The rules live in policies.ts, where the unit tests reach them without the engine.
import { PolicyPack } from "@pulumi/policy";
import { POLICIES } from "./policies";

new PolicyPack("wgexit", { policies: POLICIES });
