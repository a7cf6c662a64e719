// Service Bus namespace (Entra ID only, TLS 1.2) and the entities the worker reads, in one of two forms:
// - 'queue': the queue (queueName); the worker re-enqueues early approvals on that same queue;
// - 'topic': the topic (topicName) with the worker's subscription (subscriptionName), and a retry queue
//   (retryQueueName) that only this worker reads: an early approval re-sent to the topic would reach every
//   subscription again, so it waits on that queue instead.
// With requiresSession, every entity the worker reads requires sessions (the retry queue too: a re-enqueued
// approval keeps its session id). No rule keeps messages without a session id out of the subscription: Service Bus
// dead-letters them there ("Session id is null."), where they can be seen and resubmitted, instead of dropping them.
// Entity settings mirror infra/servicebus-emulator/Config.json; tests/deploy checks that they agree.
// Every role is assigned on one entity, never on the namespace.

@description('Location of the namespace.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Namespace name (6-50 characters, globally unique).')
param namespaceName string

@allowed([
  'queue'
  'topic'
])
@description('What the worker reads: the queue, or a subscription of the topic plus its own retry queue (topics need the Standard or Premium tier).')
param source string = 'queue'

@description('Queue name (queue form); must equal the queue in infra/servicebus-emulator/Config.json.')
param queueName string

@description('Topic name (topic form); must equal the topic in infra/servicebus-emulator/Config.json.')
param topicName string

@minLength(1)
@maxLength(50)
@description('Subscription of the topic that the worker reads (topic form).')
param subscriptionName string

@description('Queue that only the worker reads, where early approvals wait for their instance (topic form).')
param retryQueueName string

@description('Session mode: the queue, or the subscription and the retry queue, require sessions (Standard or Premium tier).')
param requiresSession bool = false

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
@description('Namespace tier.')
param skuName string = 'Standard'

@description('Principal id of the worker identity: gets Azure Service Bus Data Receiver on what it reads, and Data Sender where it re-enqueues an approval that arrived before its start as a scheduled copy (and, in topic form, on the topic, for the CLI in the container).')
param workerPrincipalId string

@description('Principal id of the scaler identity: gets Azure Service Bus Data Owner on each entity a KEDA rule counts (KEDA needs the Manage claim to read the message count).')
param scalerPrincipalId string

@description('Principal id of the deploying user: gets Azure Service Bus Data Sender on the queue or the topic so they can publish. Empty = no assignment.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Type of userPrincipalId.')
param userPrincipalType string = 'User'

// Built-in role ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles (Integration).
var serviceBusDataReceiverRoleId = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
var serviceBusDataSenderRoleId = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
var serviceBusDataOwnerRoleId = '090c5cfd-751d-490a-894a-3ce6f1109419'

var isTopic = source == 'topic'
var hasUser = !empty(userPrincipalId)

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuName
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

// --- queue form ------------------------------------------------------------------------------------

resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = if (!isTopic) {
  parent: namespace
  name: queueName
  properties: {
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    defaultMessageTimeToLive: 'PT1H'
    deadLetteringOnMessageExpiration: true
    requiresDuplicateDetection: false
    requiresSession: requiresSession
  }
}

resource workerReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!isTopic) {
  name: guid(queue.id, workerPrincipalId, serviceBusDataReceiverRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiverRoleId)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The listener re-schedules an approval whose instance does not exist yet (a scheduled copy, then it completes
// the original) instead of holding a lock or hot-looping redeliveries: that send needs Data Sender on the queue.
resource workerSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!isTopic) {
  name: guid(queue.id, workerPrincipalId, serviceBusDataSenderRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource scalerOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!isTopic) {
  name: guid(queue.id, scalerPrincipalId, serviceBusDataOwnerRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataOwnerRoleId)
    principalId: scalerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!isTopic && hasUser) {
  name: guid(queue.id, userPrincipalId, serviceBusDataSenderRoleId)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// --- topic form ------------------------------------------------------------------------------------

resource topic 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' = if (isTopic) {
  parent: namespace
  name: topicName
  properties: {
    defaultMessageTimeToLive: 'PT1H'
    requiresDuplicateDetection: false
  }
}

// Created without rules, a subscription gets Service Bus's $Default rule (1=1): it receives every message.
resource workerSubscription 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = if (isTopic) {
  parent: topic
  name: subscriptionName
  properties: {
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    defaultMessageTimeToLive: 'PT1H'
    deadLetteringOnMessageExpiration: true
    requiresSession: requiresSession
  }
}

// Duplicate detection stays off: a re-enqueued approval keeps its message id.
resource retryQueue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = if (isTopic) {
  parent: namespace
  name: retryQueueName
  properties: {
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    defaultMessageTimeToLive: 'PT1H'
    deadLetteringOnMessageExpiration: true
    requiresDuplicateDetection: false
    requiresSession: requiresSession
  }
}

resource workerSubscriptionReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isTopic) {
  name: guid(workerSubscription.id, workerPrincipalId, serviceBusDataReceiverRoleId)
  scope: workerSubscription
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiverRoleId)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource workerRetryReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isTopic) {
  name: guid(retryQueue.id, workerPrincipalId, serviceBusDataReceiverRoleId)
  scope: retryQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiverRoleId)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Early approvals are scheduled on the retry queue (and `sbworker dlq resubmit` sends there), never on the topic.
resource workerRetrySender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isTopic) {
  name: guid(retryQueue.id, workerPrincipalId, serviceBusDataSenderRoleId)
  scope: retryQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The CLI in the container publishes to the topic, as it publishes to the queue in queue form.
resource workerTopicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isTopic) {
  name: guid(topic.id, workerPrincipalId, serviceBusDataSenderRoleId)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// KEDA counts the subscription and the retry queue (one scale rule each).
resource scalerSubscriptionOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isTopic) {
  name: guid(workerSubscription.id, scalerPrincipalId, serviceBusDataOwnerRoleId)
  scope: workerSubscription
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataOwnerRoleId)
    principalId: scalerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource scalerRetryOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isTopic) {
  name: guid(retryQueue.id, scalerPrincipalId, serviceBusDataOwnerRoleId)
  scope: retryQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataOwnerRoleId)
    principalId: scalerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userTopicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isTopic && hasUser) {
  name: guid(topic.id, userPrincipalId, serviceBusDataSenderRoleId)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSenderRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// Names of the entities of the deployed form; '' for the other form's (the code treats an empty variable as unset).
output namespaceName string = namespace.name
output namespaceFqdn string = '${namespace.name}.servicebus.windows.net'
output source string = source
output queueName string = isTopic ? '' : queueName
output topicName string = isTopic ? topicName : ''
output subscriptionName string = isTopic ? subscriptionName : ''
output retryQueueName string = isTopic ? retryQueueName : ''
output requiresSession bool = requiresSession
